#!/usr/bin/env bash
# What the HTTP front costs against the gRPC front of the same server, for a quiet machine
# (127.0.0.1 only): one `pagedserve serve` (prefix caching off), then ROUNDS rounds of the same
# loadtest over each front, the order swapped every round so drift and warm-up fall on both sides
# alike. Both runs of a round send the same prompts (the round's seed): the workloads are identical,
# and with prefix caching off the second computes every prompt as the first did.
#   scripts/front-compare.sh MODEL.gguf OUT_DIR
# Env: ROUNDS (3), STREAMS (32), NUM_REQUESTS (96), INPUT_LEN (128), OUTPUT_LEN (128),
# KV_MEMORY (512MiB), THREADS (2), PAGEDSERVE (pagedserve).
# Prints per round each front's output tok/s, HTTP / gRPC, and the CPU seconds per 1000 output
# tokens of the server process and of the loadtest client (they share the machine's cores); then
# the median ratio.
set -euo pipefail
MODEL="$1"; OUT="$2"; mkdir -p "$OUT"
PAGEDSERVE="${PAGEDSERVE:-pagedserve}"
ROUNDS="${ROUNDS:-3}"; STREAMS="${STREAMS:-32}"; NUM_REQUESTS="${NUM_REQUESTS:-96}"
INPUT_LEN="${INPUT_LEN:-128}"; OUTPUT_LEN="${OUTPUT_LEN:-128}"; THREADS="${THREADS:-2}"
LOAD=(--concurrency "$STREAMS" --num-requests "$NUM_REQUESTS" --input-len "$INPUT_LEN" --output-len "$OUTPUT_LEN"
      --ignore-eos --no-plots --no-progress --ready-timeout 900 --timeout 900)

"$PAGEDSERVE" serve --model "$MODEL" --threads "$THREADS" --kv-cache-memory "${KV_MEMORY:-512MiB}" --no-prefix-cache \
  --host 127.0.0.1 --port 18051 --http-host 127.0.0.1 --http-port 18000 > "$OUT/pagedserve.log" 2>&1 &
pid=$!
trap 'kill -TERM $pid 2>/dev/null || true; wait $pid 2>/dev/null || true' EXIT

cpu_ticks() { awk '{print $14 + $15}' "/proc/$pid/stat"; }

run() {  # run FRONT SEED: one loadtest; writes the server's CPU ticks and the client's CPU seconds
  local front="$1" seed="$2" dir="$OUT/$1-$2" before
  before=$(cpu_ticks)
  if [ "$front" = http ]; then
    /usr/bin/time -f "%U %S" -o "$dir.client-cpu" "$PAGEDSERVE" loadtest --target openai --url http://127.0.0.1:18000 --prompt-format ids "${LOAD[@]}" \
      --seed "$seed" --out-dir "$dir" > "$dir.md"
  else
    /usr/bin/time -f "%U %S" -o "$dir.client-cpu" "$PAGEDSERVE" loadtest --target grpc --address 127.0.0.1:18051 "${LOAD[@]}" --seed "$seed" \
      --out-dir "$dir" > "$dir.md"
  fi
  echo $(( $(cpu_ticks) - before )) > "$dir.server-ticks"
}

rm -f "$OUT/runs.txt"
for round in $(seq 1 "$ROUNDS"); do
  if [ $((round % 2)) = 1 ]; then order="http grpc"; else order="grpc http"; fi
  for front in $order; do
    run "$front" "$round"; echo "$round $front $OUT/$front-$round" >> "$OUT/runs.txt"
  done
done

python3 - "$OUT/runs.txt" "$(getconf CLK_TCK)" <<'EOF'
import json, statistics, sys
rates, cpu = {}, {}
for line in open(sys.argv[1]):
    round_, front, run = line.split()
    summary = json.load(open(f"{run}/result.json"))["levels"][0]["summary"]
    rates[(round_, front)] = summary["output_throughput"]
    per_k = 1000.0 / summary["output_tokens"]
    server = int(open(f"{run}.server-ticks").read()) / float(sys.argv[2])  # clock ticks
    client = sum(map(float, open(f"{run}.client-cpu").read().split()[-2:]))
    cpu[(round_, front)] = f"server {server * per_k:.2f} s, client {client * per_k:.2f} s"
ratios = []
for round_ in sorted({r for r, _ in rates}, key=int):
    http, grpc = rates[(round_, "http")], rates[(round_, "grpc")]
    ratios.append(http / grpc)
    print(f"round {round_}: HTTP {http:.1f} tok/s ({cpu[(round_, 'http')]}), gRPC {grpc:.1f} tok/s "
          f"({cpu[(round_, 'grpc')]}), HTTP/gRPC {http / grpc:.3f}")
print(f"median HTTP/gRPC: {statistics.median(ratios):.3f} (CPU seconds per 1000 output tokens in brackets)")
EOF
