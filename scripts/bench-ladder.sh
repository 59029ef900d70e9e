#!/usr/bin/env bash
# The performance ladder: `pagedserve bench` beside llama.cpp on several models, in rounds (each
# round runs every model once, llama.cpp right after ours), for a quiet machine.
#   LLAMA_BENCH=/path/to/llama-bench ROUNDS=3 scripts/bench-ladder.sh OUT_DIR MODEL.gguf ...
# 1B-class models at real shapes: pagedserve synth-model --shape llama-3.2-1b --format Q4_K_M --out F.gguf
# Each run writes OUT_DIR/<model>.<round>.json (bench --json, with llama.cpp's figures and the rooflines).
# IK_LLAMA_BENCH=/path/to/ik_llama.cpp's llama-bench adds, in the same round, a second run against
# ik_llama.cpp with run-time repacking (-rtr): OUT_DIR/<model>.<round>.ik.json.
# BENCH_ARGS: more flags for every `pagedserve bench` run (e.g. "--activation-bits 8").
# Table: python scripts/ladder-summary.py OUT_DIR
set -euo pipefail
OUT="$1"; shift
: "${LLAMA_BENCH:?set LLAMA_BENCH to the path of llama-bench}"
PAGEDSERVE="${PAGEDSERVE:-pagedserve}"
mkdir -p "$OUT"
for round in $(seq 1 "${ROUNDS:-3}"); do
  for model in "$@"; do
    "$PAGEDSERVE" bench --model "$model" --prefill-tokens 512 --decode-tokens 32 --prompt-tokens 16 \
      --batch-sizes 1,32 --repeats 1 --threads "${THREADS:-2}" --compare-llamacpp "$LLAMA_BENCH" --json ${BENCH_ARGS:-} \
      > "$OUT/$(basename "$model" .gguf).$round.json"
    if [ -n "${IK_LLAMA_BENCH:-}" ]; then
      "$PAGEDSERVE" bench --model "$model" --prefill-tokens 512 --decode-tokens 32 --prompt-tokens 16 \
        --batch-sizes 1,32 --repeats 1 --threads "${THREADS:-2}" --compare-llamacpp "$IK_LLAMA_BENCH" \
        --llamacpp-run-time-repack --json ${BENCH_ARGS:-} > "$OUT/$(basename "$model" .gguf).$round.ik.json"
    fi
  done
done
