"""The scheduler micro-benchmark runs end to end (its figures are read by people, never asserted)."""

from pagedserve.bench.scheduler_step import main


def test_scheduler_step_bench_prints_one_row_per_context(capsys):
    main(["--num-seqs", "4", "--contexts", "16", "100", "--steps", "3", "--block-size", "4"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "4 sequences, 3 decode steps, block size 4"
    assert [line.split()[0] for line in lines[2:4]] == ["16", "100"]
    assert all(float(value) > 0 for line in lines[2:4] for value in line.split()[1:])
    assert lines[4].startswith("ratio 100/16: scheduler ")
