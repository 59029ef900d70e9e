#!/usr/bin/env bash
# Speculative decoding under concurrency (issue 16's server bars), for a quiet machine (127.0.0.1
# only): for each workload and round, one `pagedserve serve` with `--speculative off` and one with
# `--speculative ngram`, each under the same gRPC loadtest (same prompts: the round's seed; greedy,
# so both servers generate the same tokens), started and stopped in turn, the order swapped every
# round so drift falls on both sides alike.
#   scripts/spec-server-compare.sh MODEL.gguf OUT_DIR
# Env: ROUNDS (3), STREAMS (16), NUM_REQUESTS (48), OUTPUT_LEN (128), WORKLOADS ("grounded free-chat"),
# NUM_DRAFT_TOKENS (4), KV_MEMORY (512MiB), THREADS (2), SERVE_ARGS (""), PAGEDSERVE (pagedserve).
# Prints per workload and round each mode's output tok/s and TPOT p50, the on/off ratio, and the
# median ratio per workload.
set -euo pipefail
MODEL="$1"; OUT="$2"; mkdir -p "$OUT"
PAGEDSERVE="${PAGEDSERVE:-pagedserve}"
ROUNDS="${ROUNDS:-3}"; STREAMS="${STREAMS:-16}"; NUM_REQUESTS="${NUM_REQUESTS:-48}"; OUTPUT_LEN="${OUTPUT_LEN:-128}"
WORKLOADS="${WORKLOADS:-grounded free-chat}"; THREADS="${THREADS:-2}"
read -r -a EXTRA <<< "${SERVE_ARGS:-}"
pid=""
trap '[ -n "$pid" ] && { kill -TERM $pid 2>/dev/null || true; wait $pid 2>/dev/null || true; }' EXIT

run() {  # run WORKLOAD MODE ROUND: one server with --speculative MODE, one loadtest, server stopped
  local workload="$1" mode="$2" round="$3" dir="$OUT/$1-$2-$3"
  "$PAGEDSERVE" serve --model "$MODEL" --threads "$THREADS" --kv-cache-memory "${KV_MEMORY:-512MiB}" \
    --speculative "$mode" --num-draft-tokens "${NUM_DRAFT_TOKENS:-4}" "${EXTRA[@]}" \
    --host 127.0.0.1 --port 18052 --http-port 0 > "$dir.server.log" 2>&1 &
  pid=$!
  "$PAGEDSERVE" loadtest --target grpc --address 127.0.0.1:18052 --workload "$workload" --temperature 0 \
    --concurrency "$STREAMS" --num-requests "$NUM_REQUESTS" --output-len "$OUTPUT_LEN" --seed "$round" \
    --no-plots --no-progress --ready-timeout 900 --timeout 900 --out-dir "$dir" > "$dir.md"
  kill -TERM "$pid"; wait "$pid" || true; pid=""
  echo "$workload $mode $round $dir" >> "$OUT/runs.txt"
}

rm -f "$OUT/runs.txt"
for round in $(seq 1 "$ROUNDS"); do
  for workload in $WORKLOADS; do
    if [ $((round % 2)) = 1 ]; then order="off ngram"; else order="ngram off"; fi
    for mode in $order; do run "$workload" "$mode" "$round"; done
  done
done

python3 - "$OUT/runs.txt" <<'EOF'
import collections, json, statistics, sys
runs = {}
for line in open(sys.argv[1]):
    workload, mode, round_, run = line.split()
    runs[(workload, mode, round_)] = json.load(open(f"{run}/result.json"))["levels"][0]["summary"]
ratios = collections.defaultdict(list)
for (workload, mode, round_), summary in sorted(runs.items()):
    if mode != "off":
        continue
    off, on = summary, runs[(workload, "ngram", round_)]
    ratio = on["output_throughput"] / off["output_throughput"]
    ratios[workload].append(ratio)
    print(f"{workload} round {round_}: off {off['output_throughput']:.1f} tok/s (TPOT p50 "
          f"{off['tpot_ms']['p50']:.0f} ms), ngram {on['output_throughput']:.1f} tok/s (TPOT p50 "
          f"{on['tpot_ms']['p50']:.0f} ms), ngram/off {ratio:.3f}")
for workload, values in ratios.items():
    print(f"{workload}: median ngram/off {statistics.median(values):.3f}")
EOF
