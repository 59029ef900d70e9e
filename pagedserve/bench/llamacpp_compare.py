"""Run llama.cpp's own benchmarks on the same model and thread count, for side-by-side tables.

`llama-bench` gives prefill (pp N) and single-sequence decode (tg N) tokens/s; `llama-batched-bench`
(found beside it) gives aggregate decode tokens/s for several parallel sequences. Nothing of
llama.cpp is shipped or built here: the caller passes the path of a binary built elsewhere.

The same code drives ik_llama.cpp, the fastest CPU fork: its llama-bench speaks `-o json` (not
jsonl), its llama-batched-bench prints only a markdown table, and `run_time_repack` passes its
`-rtr` (repack the weights into its fastest CPU layouts at load).
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass


@dataclass(frozen=True)
class LlamaCppFigures:
    prefill_tok_s: float
    decode_tok_s: dict[str, float]  # batch size -> aggregate generated tokens/s
    build_commit: str


def _run(cmd: list[str], timeout: float, with_stderr: bool = False) -> str:
    """The command's stdout (and then its stderr, where ik_llama.cpp's batched-bench logs its table)."""
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise RuntimeError(f"{os.path.basename(cmd[0])} failed ({result.returncode}): {result.stderr[-400:]}")
    return result.stdout + result.stderr if with_stderr else result.stdout


def batched_rows(stdout: str) -> list[dict]:
    """(pl, speed_tg) rows of llama-batched-bench: its jsonl lines (mainline), else the rows of its
    markdown table `| PP | TG | B | N_KV | T_PP s | S_PP t/s | T_TG s | S_TG t/s | ...` (ik_llama.cpp)."""
    rows = [json.loads(line) for line in map(str.strip, stdout.splitlines()) if line.startswith("{")]
    if rows:
        return [{"pl": int(r["pl"]), "speed_tg": float(r["speed_tg"])} for r in rows]
    for line in stdout.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 8 and cells[0].isdigit():
            rows.append({"pl": int(cells[2]), "speed_tg": float(cells[7])})
    return rows


def run_llamacpp(llama_bench: str, model: str, threads: int, *, prefill_tokens: int = 512,
                 decode_tokens: int = 128, prompt_tokens: int = 128, batch_sizes: list[int] = (1,),
                 repeats: int = 3, run_time_repack: bool = False, timeout: float = 1800.0) -> LlamaCppFigures:
    """Prefill and decode figures from llama-bench / llama-batched-bench (medians of `repeats`)."""
    if not os.path.isfile(llama_bench):
        raise FileNotFoundError(f"llama-bench not found at {llama_bench}")
    rows = json.loads(_run([llama_bench, "-m", model, "-t", str(threads), "-p", str(prefill_tokens),
                            "-n", str(decode_tokens), "-r", str(repeats), "-o", "json",
                            *(["-rtr", "1"] if run_time_repack else [])], timeout))
    prefill = next(r for r in rows if r["n_prompt"] == prefill_tokens and r["n_gen"] == 0)
    tg = next(r for r in rows if r["n_gen"] == decode_tokens and r["n_prompt"] == 0)
    decode = {"1": float(_median(tg["samples_ts"]))}
    batched = os.path.join(os.path.dirname(llama_bench), "llama-batched-bench")
    wanted = [b for b in batch_sizes if b > 1]
    if wanted and os.path.isfile(batched):
        n_ctx = max(wanted) * (prompt_tokens + decode_tokens) + 64
        runs: dict[int, list[float]] = {b: [] for b in wanted}
        for _ in range(repeats):
            stdout = _run([batched, "-m", model, "-t", str(threads), "-c", str(n_ctx),
                           "-b", "2048", "-ub", "512", "-npp", str(prompt_tokens),
                           "-ntg", str(decode_tokens), "-npl", ",".join(map(str, wanted)),
                           "--output-format", "jsonl", *(["-rtr"] if run_time_repack else [])], timeout,
                          with_stderr=True)
            for r in batched_rows(stdout):
                if r["pl"] in runs:
                    runs[r["pl"]].append(r["speed_tg"])
        decode.update({str(b): _median(v) for b, v in runs.items() if v})
    return LlamaCppFigures(float(_median(prefill["samples_ts"])), decode, str(prefill.get("build_commit", "")))


def _median(values) -> float:
    ordered = sorted(float(v) for v in values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2
