"""run_llamacpp against stand-in binaries that print what mainline llama.cpp and ik_llama.cpp print."""

import json
import os
import stat

from pagedserve.bench.llamacpp_compare import batched_rows, run_llamacpp

MAINLINE_BATCHED = """main: n_kv_max = 4160
{"n_kv_max": 4160, "n_batch": 2048, "n_ubatch": 512, "pp": 128, "tg": 32, "pl": 32, "n_kv": 5120, "t_pp": 30.1, "speed_pp": 136.0, "t_tg": 11.2, "speed_tg": 91.5, "t": 41.3, "speed": 124.0}
"""

IK_BATCHED = """main: n_kv_max = 5200, n_batch = 2048, n_ubatch = 512
|    PP |     TG |    B |   N_KV |   T_PP s | S_PP t/s |   T_TG s | S_TG t/s |      T s |    S t/s |
|-------|--------|------|--------|----------|----------|----------|----------|----------|----------|
|   128 |     32 |    2 |    320 |    1.900 |   134.74 |    1.363 |    46.96 |    3.263 |    98.07 |
|   128 |     32 |   32 |   5120 |   29.658 |   138.11 |   14.763 |    69.36 |   44.421 |   115.26 |
"""


def test_batched_rows_read_both_output_formats():
    assert batched_rows(MAINLINE_BATCHED) == [{"pl": 32, "speed_tg": 91.5}]
    assert batched_rows(IK_BATCHED) == [{"pl": 2, "speed_tg": 46.96}, {"pl": 32, "speed_tg": 69.36}]
    assert batched_rows("no figures here\n| PP | TG | B |\n") == []


def _script(path, argv_log, stdout: str, to_stderr: bool = False) -> None:
    with open(path, "w") as f:
        f.write(f"#!/bin/sh\necho \"$@\" >> {argv_log}\ncat {'>&2 ' if to_stderr else ''}<<'END'\n{stdout}END\n")
    os.chmod(path, os.stat(path).st_mode | stat.S_IEXEC)


def test_ik_llamacpp_gets_its_repack_flag_and_its_table_is_read(tmp_path):
    bench_rows = [{"n_prompt": 512, "n_gen": 0, "samples_ts": [180.0, 190.0, 200.0], "build_commit": "ik1"},
                  {"n_prompt": 0, "n_gen": 32, "samples_ts": [47.0, 48.0, 49.0], "build_commit": "ik1"}]
    log = tmp_path / "argv.txt"
    _script(tmp_path / "llama-bench", log, json.dumps(bench_rows, indent=2) + "\n")
    _script(tmp_path / "llama-batched-bench", log, IK_BATCHED, to_stderr=True)  # ik logs its table there
    figures = run_llamacpp(str(tmp_path / "llama-bench"), "m.gguf", 2, decode_tokens=32, batch_sizes=[1, 32],
                           repeats=1, run_time_repack=True)
    assert figures.prefill_tok_s == 190.0 and figures.build_commit == "ik1"
    assert figures.decode_tok_s == {"1": 48.0, "32": 69.36}
    bench_argv, batched_argv = log.read_text().splitlines()
    assert "-o json" in bench_argv and bench_argv.endswith("-rtr 1")
    assert "-npl 32" in batched_argv and batched_argv.endswith("-rtr")


def test_mainline_gets_no_repack_flag(tmp_path):
    rows = [{"n_prompt": 512, "n_gen": 0, "samples_ts": [140.0]}, {"n_prompt": 0, "n_gen": 32, "samples_ts": [45.0]}]
    log = tmp_path / "argv.txt"
    _script(tmp_path / "llama-bench", log, json.dumps(rows) + "\n")
    _script(tmp_path / "llama-batched-bench", log, MAINLINE_BATCHED)
    figures = run_llamacpp(str(tmp_path / "llama-bench"), "m.gguf", 2, decode_tokens=32, batch_sizes=[1, 32],
                           repeats=1)
    assert figures.decode_tok_s == {"1": 45.0, "32": 91.5}
    assert "-rtr" not in log.read_text()
