"""`pagedserve bench` workloads and options, in process over the session's model (tiny sizes).

The subprocess JSON contract is in tests/cli/test_cli.py; these check what the figures mean.
"""

import json

import numpy as np
import pytest

from pagedserve.cache.kv_cache_spec import KVCacheSpec
from pagedserve.bench.workloads import (
    blocks_per_sequence,
    capacity_table,
    concurrency_workload,
    shared_prefix_workload,
)

VOCAB = 49152


def smollm2_spec(sliding_window: int = 0, num_blocks: int = 2) -> KVCacheSpec:
    return KVCacheSpec.from_layer_windows([sliding_window] * 30, block_size=16, num_blocks=num_blocks,
                                          num_kv_heads=3, head_dim=64, kv_dtype="f32")


def test_capacity_int8_fits_more_than_1_8x_f16_sequences_in_the_same_memory():
    table = capacity_table(smollm2_spec(), 512 * 2**20, 1024)
    f32, f16, int8 = (table[d]["max_concurrent_sequences"] for d in ("f32", "f16", "int8"))
    assert table["f32"]["bytes_per_token"] == 2 * 30 * 3 * 64 * 4
    assert table["int8"]["bytes_per_token"] == 2 * 30 * 3 * (64 + 4)  # int8 values + one f32 scale per head
    assert table["f32"]["num_blocks"] == 512 * 2**20 // (16 * 46080) - 1  # the null block excluded
    assert f32 == table["f32"]["num_blocks"] // 64
    assert int8 >= 1.8 * f16 and f16 >= 1.9 * f32


def test_capacity_with_a_window_counts_only_the_window_blocks():
    spec = smollm2_spec(sliding_window=256)
    assert blocks_per_sequence(spec, 10_000) == (17,)
    assert blocks_per_sequence(spec, 100) == (7,)
    gemma_like = KVCacheSpec.from_layer_windows([0, 512, 512], block_size=16, num_blocks=2, num_kv_heads=1,
                                                head_dim=256, kv_dtype="f32")
    assert blocks_per_sequence(gemma_like, 4096) == (256, 33)


def test_shared_prefix_workload_computes_the_prefix_once(make_engine):
    engine = make_engine(max_num_batched_tokens=32)
    rng = np.random.default_rng(0)
    r = shared_prefix_workload(engine, rng, num_requests=4, prefix_tokens=64, suffix_tokens=4, new_tokens=2,
                               vocab=VOCAB)
    assert r.num_requests == 4 and r.prompt_tokens == 4 * 68 and r.generated_tokens == 8
    # The first prompt is computed whole (in 32-token chunks); later ones hit its 4 prefix blocks.
    assert r.prefix_hit_tokens == 3 * 64
    assert r.prefill_tokens_computed == r.prompt_tokens - r.prefix_hit_tokens
    assert len(r.ttft_s) == 4 and r.ttft_s[0] <= max(r.ttft_s)
    assert 0 < r.peak_blocks_used <= r.num_blocks_total and r.preemptions == 0
    off = make_engine(max_num_batched_tokens=32, enable_prefix_caching=False)
    r_off = shared_prefix_workload(off, np.random.default_rng(0), 4, 64, 4, 2, VOCAB)
    assert r_off.prefix_hit_tokens == 0 and r_off.prefill_tokens_computed == r_off.prompt_tokens


def test_concurrency_workload_counts_preemptions_and_tokens(make_engine):
    engine = make_engine(num_kv_blocks=6)  # 5 blocks: 4 sequences of 17..24 tokens need 8
    r = concurrency_workload(engine, np.random.default_rng(1), 4, 16, 8, VOCAB)
    assert r.generated_tokens == 4 * 8 and len(r.ttft_s) == 4
    assert r.preemptions > 0 and r.peak_blocks_used <= 5
    assert r.prefill_tokens_computed > r.prompt_tokens  # preempted sequences recompute
    assert r.generated_tok_s > 0 and r.prefill_tok_s > 0


def test_bench_honours_engine_flags(smollm2_model, monkeypatch, capsys):
    """--kv-dtype, --sliding-window, --no-prefix-cache, --kv-cache-memory reach the engine."""
    import pagedserve.engine.engine_factory as factory
    from pagedserve.cli.main import main

    monkeypatch.setattr(factory, "load_model", lambda path: smollm2_model)
    code = main(["--log-level", "WARNING", "bench", "--bandwidth-probe-mib", "0", "--json", "--prefill-tokens", "0", "--batch-sizes", "",
                 "--decode-tokens", "2", "--prompt-tokens", "4", "--concurrency", "2", "--shared-prefix", "40",
                 "--shared-requests", "2", "--max-num-batched-tokens", "16", "--kv-dtype", "int8",
                 "--sliding-window", "32", "--no-prefix-cache", "--kv-cache-memory", "2MiB",
                 "--capacity-tokens", "512"])
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    assert result["prefill_tok_s"] is None and result["decode_tok_s"] == {}
    assert (result["kv_dtype"], result["sliding_window"], result["prefix_caching"]) == ("int8", 32, False)
    assert result["kv_cache"]["memory_bytes"] == 2 * 2**20
    int8 = result["capacity"]["by_kv_dtype"]["int8"]
    assert result["kv_cache"]["num_blocks_total"] == int8["num_blocks"] == 2 * 2**20 // (16 * 12240) - 1
    assert int8["blocks_per_sequence"] == [3]  # ceil(32 / 16) + 1 under the window
    assert result["concurrency"]["n"] == 2 and result["concurrency"]["generated_tokens"] == 4
    assert result["shared_prefix"]["prefix_hit_tokens"] == 0  # prefix caching is off
    assert result["shared_prefix"]["prefill_tokens_computed"] == 2 * 44
    assert result["speculative"]["method"] == "off" and result["speculative"]["draft_tokens"] == 0


def test_bench_json_reports_speculative_decoding(smollm2_model, monkeypatch, capsys):
    import pagedserve.engine.engine_factory as factory
    from pagedserve.cli.main import main

    monkeypatch.setattr(factory, "load_model", lambda path: smollm2_model)
    assert main(["--log-level", "WARNING", "bench", "--bandwidth-probe-mib", "0", "--json", "--prefill-tokens", "0",
                 "--batch-sizes", "1", "--repeats", "1", "--decode-tokens", "24", "--prompt-tokens", "8",
                 "--num-kv-blocks", "32", "--max-step-ms", "0", "--speculative", "ngram", "--num-draft-tokens", "3",
                 "--prompt-lookup-min", "1"]) == 0
    spec = json.loads(capsys.readouterr().out)["speculative"]
    assert (spec["method"], spec["num_draft_tokens"]) == ("ngram", 3)
    counts = spec["acceptance_length_counts"]
    assert sum(a * c for a, c in enumerate(counts)) == spec["accepted_tokens"] <= spec["draft_tokens"]
    assert spec["draft_tokens"] > 0  # a random prompt decoded greedily soon repeats itself


def test_bench_runs_with_an_f16_kv_cache(smollm2_model, monkeypatch, capsys):
    import pagedserve.engine.engine_factory as factory
    from pagedserve.cli.main import main

    monkeypatch.setattr(factory, "load_model", lambda path: smollm2_model)
    assert main(["--log-level", "WARNING", "bench", "--bandwidth-probe-mib", "0", "--prefill-tokens", "0", "--batch-sizes", "1", "--repeats", "1",
                 "--decode-tokens", "2", "--prompt-tokens", "4", "--kv-dtype", "f16", "--kv-cache-memory", "2MiB",
                 "--capacity-tokens", "64"]) == 0
    report = capsys.readouterr().out
    # 2 bytes per value: 2 MiB hold 5 blocks of 16 tokens (4 usable), against 2 (1 usable) for f32.
    assert "KV cache: 4 blocks of 16 tokens" in report
    [f16_row] = [line for line in report.splitlines() if line.startswith("  f16 ")]
    assert f16_row.endswith("<- this run") and "sizing only" not in report


@pytest.mark.parametrize("flag", [[], ["--no-prefix-cache"]])
def test_shared_prefix_flag_decides_prefix_caching(smollm2_model, monkeypatch, capsys, flag):
    import pagedserve.engine.engine_factory as factory
    from pagedserve.cli.main import main

    monkeypatch.setattr(factory, "load_model", lambda path: smollm2_model)
    assert main(["--log-level", "WARNING", "bench", "--bandwidth-probe-mib", "0", "--json", "--prefill-tokens", "0", "--batch-sizes", "1",
                 "--repeats", "1", "--decode-tokens", "2", "--prompt-tokens", "4", "--shared-prefix", "48",
                 "--shared-requests", "3", "--max-num-batched-tokens", "16", "--num-kv-blocks", "32"] + flag) == 0
    result = json.loads(capsys.readouterr().out)
    hits = result["shared_prefix"]["prefix_hit_tokens"]
    assert hits == (0 if flag else 2 * 48)
    assert result["prefix_caching"] is not bool(flag)


def test_llamacpp_ratios_pair_each_round():
    """Each ratio is the median of per-round ratios (ours / llama.cpp's run right after), not the
    ratio of the medians: on a machine whose speed drifts, pairs taken close together compare."""
    from pagedserve.bench.bench import llamacpp_summary
    from pagedserve.bench.report import comparison_table
    from pagedserve.bench.llamacpp_compare import LlamaCppFigures

    rounds = [{"prefill": p, "decode": {"1": d}} for p, d in ((100.0, 10.0), (150.0, 40.0), (300.0, 30.0))]
    theirs = [LlamaCppFigures(p, {"1": d}, "abc") for p, d in ((50.0, 5.0), (300.0, 20.0), (100.0, 60.0))]
    summary = llamacpp_summary(rounds, theirs, threads=2)
    assert summary["prefill_tok_s"] == 100.0 and summary["decode_tok_s"] == {"1": 20.0}
    assert summary["ratio_prefill"] == 2.0  # ratios 2, 0.5, 3 (the medians' ratio would be 1.5)
    assert summary["ratio_decode"] == {"1": 2.0}  # ratios 2, 2, 0.5
    table = comparison_table({"prefill_tok_s": 150.0, "decode_tok_s": {"1": 30.0}, "repeats": 3,
                               "llamacpp": summary})
    assert "prefill" in table and "2.00x" in table and "median of the per-round ratios" in table


def test_bandwidth_probe_reads_a_small_buffer():
    from pagedserve.bench.bandwidth_probe import measure_read_bandwidth

    bandwidth = measure_read_bandwidth(4 * 2**20, passes=2)
    assert np.isfinite(bandwidth) and bandwidth > 0


def test_roofline_arithmetic_on_fixed_numbers():
    from pagedserve.bench.roofline import (cpu_clock_mhz, decode_roofline_tok_s, int_dot_peak_macs,
                                           roofline_report, vnni_instruction, WeightStats)

    # 35 GB/s over 0.7 GB of weights: 50 tok/s alone; 32 sequences of 1000 tokens at 32 KB/token
    # add 1.024 GB a step: 32 * 35e9 / 1.724e9 tok/s.
    assert decode_roofline_tok_s(35e9, 700_000_000, 32_000, 1, 0) == pytest.approx(50.0)
    assert decode_roofline_tok_s(35e9, 700_000_000, 32_000, 32, 1000) == pytest.approx(32 * 35e9 / 1.724e9)
    cpuinfo = "processor\t: 0\ncpu MHz\t\t: 2596.140\nflags\t\t: fpu avx2 avx512_vnni\n" \
              "processor\t: 1\ncpu MHz\t\t: 2400.000\nflags\t\t: fpu avx2 avx512_vnni\n"
    assert cpu_clock_mhz(cpuinfo) == 2596.140 and cpu_clock_mhz("flags: x") is None
    assert vnni_instruction(cpuinfo) == "vpdpbusd" and vnni_instruction("flags\t: avx2") is None
    assert int_dot_peak_macs(2, 2.5e9, "vpdpbusd") == 1 * 64 * 2 * 2.5e9
    assert int_dot_peak_macs(2, 2.5e9, "vpdpwssd", per_cycle=2) == 2 * 32 * 2 * 2.5e9
    stats = WeightStats(num_weights=10**9, loaded_bytes=600_000_000, file_bytes=560_000_000,
                        decode_weight_bytes=500_000_000, macs_per_token=10**9)
    result = {"prefill_tok_s": 80.0, "decode_tok_s": {"1": 25.0, "4": 80.0}}
    r = roofline_report(result, stats, kv_bytes_per_token=1000, bandwidth=30e9, num_cores=2,
                        cpuinfo_text=cpuinfo, prompt_tokens=100, decode_tokens=200)
    assert r["decode_mean_context_tokens"] == 200
    assert r["decode"]["1"]["max_tok_s"] == pytest.approx(30e9 / 500_200_000)
    assert r["decode"]["4"]["fraction"] == pytest.approx(80.0 / (4 * 30e9 / 500_800_000))
    peak16 = 32 * 2 * 2596.140e6
    assert r["int_dot"]["fraction"]["prefill"]["vpdpwssd"] == pytest.approx(80e9 / peak16)
    assert r["int_dot"]["fraction"]["decode batch 4"]["vpdpbusd"] == pytest.approx(80e9 / (2 * peak16))
    assert stats.to_json()["loaded_bytes_per_weight"] == 0.6


def test_weight_stats_of_the_small_model(smollm2_model):
    from pagedserve.bench.roofline import weight_stats
    from pagedserve.model.gguf_file import read_gguf

    stats = weight_stats(smollm2_model.weights, read_gguf(smollm2_model.path).tensors)
    # SmolLM2-135M: 30 layers of D=576, F=1536, 9 heads + 3 KV heads of 64; tied 49152 x 576 embedding.
    layer = 576 * (576 + 2 * 192) + 576 * 576 + 2 * 1536 * 576 + 576 * 1536
    assert stats.num_weights == 30 * layer + 49152 * 576
    assert stats.macs_per_token == 30 * layer + 49152 * 576
    # Q4_1 in the file: 20 bytes per 32 weights (the embedding may be another format; hence a range).
    assert 0.5 <= stats.file_bytes / stats.num_weights <= 1.2
    assert stats.loaded_bytes >= stats.decode_weight_bytes > 0


def test_bench_json_has_the_roofline(smollm2_model, monkeypatch, capsys):
    import pagedserve.engine.engine_factory as factory
    from pagedserve.cli.main import main

    monkeypatch.setattr(factory, "load_model", lambda path: smollm2_model)
    assert main(["--log-level", "WARNING", "bench", "--json", "--prefill-tokens", "16", "--batch-sizes", "1,2",
                 "--repeats", "1", "--decode-tokens", "2", "--prompt-tokens", "4", "--num-kv-blocks", "32",
                 "--bandwidth-probe-mib", "4"]) == 0
    r = json.loads(capsys.readouterr().out)["roofline"]
    assert r["weights"]["loaded_bytes_per_weight"] > 0 and r["weights"]["file_bytes_per_weight"] > 0
    assert r["read_bandwidth_bytes_s"] > 0 and set(r["decode"]) == {"1", "2"}
    assert all(d["max_tok_s"] > 0 and d["fraction"] > 0 for d in r["decode"].values())
    assert r["clock_source"] == "/proc/cpuinfo cpu MHz"
    if r["int_dot"] is not None:  # a CPU without avx512_vnni has no VNNI peak to compare with
        assert set(r["int_dot"]["achieved_macs_s"]) == {"prefill", "decode batch 2"}


def test_bench_text_report_prints_the_roofline(smollm2_model, monkeypatch, capsys):
    import pagedserve.engine.engine_factory as factory
    from pagedserve.cli.main import main

    monkeypatch.setattr(factory, "load_model", lambda path: smollm2_model)
    assert main(["--log-level", "WARNING", "bench", "--prefill-tokens", "16", "--batch-sizes", "1",
                 "--repeats", "1", "--decode-tokens", "2", "--prompt-tokens", "4", "--num-kv-blocks", "32",
                 "--bandwidth-probe-mib", "4"]) == 0
    report = capsys.readouterr().out
    assert "bytes per weight loaded" in report and "read bandwidth" in report
    assert "decode batch 1" in report and "reached" in report
