"""The ladder's table from scripts/bench-ladder.sh's JSON files: per model and figure, the medians
over rounds of ours, of llama.cpp's, and of the per-round ratio (each ratio pairs runs of the same
minutes), with the roofline fraction of ours (decode: of the read bandwidth; prefill: of the VNNI peak of
the instruction its activation width uses, vpdpwssd for 16 bits, vpdpbusd for 8). Files <model>.<round>.ik.json (IK_LLAMA_BENCH) add
ik_llama.cpp's columns.
    python scripts/ladder-summary.py OUT_DIR
"""

import glob
import json
import os
import statistics
import sys

FIGURES = {"prefill": "prefill 512", "1": "decode b1", "32": "decode b32"}


def load(out: str, model: str, suffix: str) -> list[dict]:
    rows = []
    for path in sorted(glob.glob(os.path.join(out, f"{model}.*{suffix}.json"))):
        if suffix or not path.endswith(".ik.json"):
            try:
                rows.append(json.load(open(path)))
            except json.JSONDecodeError:  # a run still writing (or killed): not a round
                continue
    return rows


def figure(row: dict, key: str, theirs: bool = False):
    src = row["llamacpp"] if theirs else row
    return src["prefill_tok_s"] if key == "prefill" else src["decode_tok_s"].get(key)


def roofline(rows: list[dict], key: str) -> str:
    try:
        if key == "prefill":  # the peak of the instruction the activation width uses
            unit = {8: "vpdpbusd"}.get(rows[0].get("activation_bits"), "vpdpwssd")
            return "%.2f" % statistics.median(r["roofline"]["int_dot"]["fraction"]["prefill"][unit] for r in rows)
        return "%.2f" % statistics.median(r["roofline"]["decode"][key]["fraction"] for r in rows)
    except (KeyError, TypeError, statistics.StatisticsError):
        return ""


def ratio(rows: list[dict], key: str) -> tuple[float, float, float]:
    pairs = [(figure(r, key), figure(r, key, True)) for r in rows]
    pairs = [(a, b) for a, b in pairs if a and b]
    return (statistics.median(a for a, _ in pairs), statistics.median(b for _, b in pairs),
            statistics.median(a / b for a, b in pairs))


def main(out: str) -> None:
    models = sorted({os.path.basename(p).split(".")[0] for p in glob.glob(os.path.join(out, "*.json"))})
    ik = any(glob.glob(os.path.join(out, "*.ik.json")))
    print("| model | figure | pagedserve | llama.cpp | ratio |" + (" ik_llama.cpp -rtr | ratio |" if ik else "")
          + " roofline | rounds |")
    print("|---|---|---|---|---|" + ("---|---|" if ik else "") + "---|---|")
    for model in models:
        rows, ik_rows = load(out, model, ""), load(out, model, ".ik")
        for key, name in FIGURES.items():
            if not rows or figure(rows[0], key) is None:
                continue
            ours, theirs, r = ratio(rows, key)
            line = f"| {model if key == 'prefill' else ''} | {name} | {ours:.1f} | {theirs:.1f} | {r:.2f}x |"
            if ik:
                has_ik = any(figure(r, key) and figure(r, key, True) for r in ik_rows)
                line += " {1:.1f} | {2:.2f}x |".format(*ratio(ik_rows, key)) if has_ik else " - | - |"
            print(line + f" {roofline(rows, key)} | {len(rows)} |")


if __name__ == "__main__":
    main(sys.argv[1])
