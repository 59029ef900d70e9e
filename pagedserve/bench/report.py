"""The text report of `pagedserve bench` (the figures themselves: bench/bench.py's `run_bench`)."""

from __future__ import annotations


def comparison_table(result: dict) -> str:
    """Ours and llama.cpp's figures side by side, with the per-round ratios' medians."""
    ours, theirs = result, result["llamacpp"]
    rows = [f"side by side with llama.cpp {theirs['build_commit']} ({theirs['threads']} threads), "
            f"medians of {result['repeats']} rounds; ratio = median of the per-round ratios",
            f"{'measurement':<28}{'pagedserve':>12}{'llama.cpp':>12}{'ratio':>8}"]
    pairs = [("prefill", ours["prefill_tok_s"], theirs["prefill_tok_s"], theirs["ratio_prefill"])]
    pairs += [(f"decode batch {b}", v, theirs["decode_tok_s"].get(b), theirs["ratio_decode"].get(b))
              for b, v in ours["decode_tok_s"].items()]
    for label, a, b, ratio in pairs:
        if a is None or not b or ratio is None:
            continue
        rows.append(f"{label:<28}{a:>12.1f}{b:>12.1f}{ratio:>7.2f}x")
    return "\n".join(rows)


def _row(label: str, value: str) -> str:
    return f"{label:<40}{value:>16}"


def _workload_lines(r: dict) -> list[str]:
    return [
        _row("  generated tokens/s (aggregate)", f"{r['generated_tok_s']:.1f}"),
        _row("  decode tokens/s (all running)", f"{r['decode_tok_s']:.1f}"),
        _row("  prefill tokens/s", f"{r['prefill_tok_s']:.1f}"),
        _row("  prompt tokens computed / total", f"{r['prefill_tokens_computed']} / {r['prompt_tokens']}"),
        _row("  prefix-cache hit rate", f"{100 * r['prefix_cache_hit_rate']:.1f}%"),
        _row("  time to first token first/mean/max s",
             "/".join("-" if r[k] is None else f"{r[k]:.2f}" for k in ("ttft_first_s", "ttft_mean_s", "ttft_max_s"))),
        _row("  peak KV blocks used / total", f"{r['peak_blocks_used']} / {r['num_blocks_total']}"),
        _row("  preemptions", str(r["preemptions"])),
    ]


def prompt_set_lines(w: dict) -> list[str]:
    """The --workload run: single stream, concurrent (if run), and how much the outputs copy."""
    s = w["single_stream"]
    copy = "-" if w["copy_fraction"] is None else f"{100 * w['copy_fraction']:.1f}%"
    lines = [f"workload {w['name']}: {s['num_requests']} prompts (seed {w['seed']}), greedy, "
             f"up to {w['new_tokens']} new tokens each",
             _row("  single stream generated tokens/s", f"{s['generated_tok_s']:.1f}"),
             _row("  single stream decode tokens/s", f"{s['decode_tok_s']:.1f}"),
             _row("  prompt / generated tokens", f"{s['prompt_tokens']} / {s['generated_tokens']}"),
             _row(f"  output {w['copy_ngram']}-grams found in the prompt", copy)]
    if "concurrent" in w:
        lines.append(f"  {w['concurrent']['n']} of them at once")
        lines += ["  " + line for line in _workload_lines(w["concurrent"])]
    return lines


def roofline_lines(r: dict) -> list[str]:
    """Bytes per weight, read bandwidth, and the fractions of the memory roofline and VNNI peak."""
    w = r["weights"]
    lines = [
        f"weights: {w['loaded_bytes_per_weight']:.3f} bytes per weight loaded, {w['file_bytes_per_weight']:.3f} "
        f"in the file ({w['loaded_bytes'] / 2**20:.1f} vs {w['file_bytes'] / 2**20:.1f} MiB, "
        f"x{w['loaded_bytes'] / max(1, w['file_bytes']):.3f})",
        f"read bandwidth {r['read_bandwidth_bytes_s'] / 1e9:.1f} GB/s ({r['cores']} threads, probe best of 5); "
        f"decode roofline = bandwidth / bytes per token (weights {w['decode_weight_bytes'] / 2**20:.1f} MiB "
        f"+ KV at {r['decode_mean_context_tokens']:.0f} tokens):",
    ]
    for batch, d in r["decode"].items():
        lines.append(f"  decode batch {batch:<6} max {d['max_tok_s']:>10.1f} tok/s, reached {100 * d['fraction']:5.1f}%")
    dot = r["int_dot"]
    if dot is None:
        lines.append("integer dot-product peak: unknown (no avx512_vnni or no cpu MHz in /proc/cpuinfo)")
        return lines
    peaks = dot["peak_macs_s"]
    lines.append(f"integer dot-product peak ({r['cores']} cores x {r['clock_mhz']:.0f} MHz from /proc/cpuinfo "
                 f"'cpu MHz' x {r['vnni_per_cycle_assumed']} VNNI/cycle assumed): "
                 f"vpdpbusd (8-bit) {peaks['vpdpbusd'] / 1e9:.0f} GMAC/s, vpdpwssd (16-bit) "
                 f"{peaks['vpdpwssd'] / 1e9:.0f} GMAC/s; {w['macs_per_token'] / 1e6:.1f} M MACs per token")
    for what, macs in dot["achieved_macs_s"].items():
        f = dot["fraction"][what]
        lines.append(f"  {what:<20} {macs / 1e9:>8.1f} GMAC/s = {100 * f['vpdpwssd']:5.1f}% of 16-bit, "
                     f"{100 * f['vpdpbusd']:5.1f}% of 8-bit")
    return lines


def text_report(result: dict, options, weight_format: str) -> str:
    """The human-readable report of one `run_bench` result (`options`: its BenchOptions)."""
    lines = [
        f"model {result['model']} ({weight_format}), kv {result['kv_dtype']}, median of {result['repeats']} runs",
        f"{'measurement':<28}{'tokens/s':>12}",
    ]
    if result["prefill_tok_s"] is not None:
        lines.append(f"{'prefill ' + str(options.prefill_tokens) + ' tokens':<28}{result['prefill_tok_s']:>12.1f}")
    for b, v in result["decode_tok_s"].items():
        lines.append(f"{'decode batch ' + b:<28}{v:>12.1f}")
    kv = result["kv_cache"]
    line = (f"KV cache: {kv['num_blocks_total']} blocks of {result['block_size']} tokens "
            f"({kv['memory_bytes'] / 2**20:.1f} MiB), prefix caching {'on' if result['prefix_caching'] else 'off'}")
    if result["decode_tok_s"]:
        line += (f" (off for the runs above: peak {kv['sweep_peak_blocks_used']} blocks, "
                 f"{kv['sweep_preemptions']} preemptions)")
    lines.append(line)
    if "roofline" in result:
        lines += roofline_lines(result["roofline"])
    if "concurrency" in result:
        c = result["concurrency"]
        lines.append(f"concurrency {c['n']} ({options.prompt_tokens}-token prompts, "
                     f"{options.decode_tokens} new tokens each)")
        lines += _workload_lines(c)
        if c["decode_speedup_vs_single"] is not None:
            lines.append(_row("  decode tokens/s of 1 sequence alone", f"{c['single_decode_tok_s']:.1f}"))
            lines.append(_row(f"  decode speed-up {c['n']} vs 1", f"x{c['decode_speedup_vs_single']:.2f}"))
    if "workload" in result:
        lines += prompt_set_lines(result["workload"])
    if "shared_prefix" in result:
        s = result["shared_prefix"]
        lines.append(f"shared prefix {s['prefix_tokens']} tokens x {s['num_requests']} requests "
                     f"(+{options.prompt_tokens} own tokens, {options.decode_tokens} new tokens each), prefix caching "
                     f"{'on' if result['prefix_caching'] else 'off'}")
        lines += _workload_lines(s)
    cap = result["capacity"]
    lines.append(f"max concurrent sequences of {cap['seq_tokens']} tokens in {kv['memory_bytes'] / 2**20:.1f} MiB "
                 f"(usable blocks / blocks per sequence):")
    table = cap["by_kv_dtype"]
    for dtype, row in table.items():
        note = " <- this run" if dtype == result["kv_dtype"] else ""
        ratio = row["max_concurrent_sequences"] / max(1, table["f32"]["max_concurrent_sequences"])
        lines.append(f"  {dtype:<5}{row['bytes_per_token']:>8} B/token{row['num_blocks']:>8} blocks"
                     f"{row['max_concurrent_sequences']:>7} sequences  x{ratio:.2f} vs f32{note}")
    fits = {dtype: row["max_concurrent_sequences"] for dtype, row in table.items()}
    if fits.get("f16"):
        lines.append(f"  int8 fits x{fits['int8'] / fits['f16']:.2f} the sequences of f16"
                     f" and x{fits['int8'] / max(1, fits['f32']):.2f} of f32")
    if "llamacpp" in result:
        lines.append(comparison_table(result))
    return "\n".join(lines)
