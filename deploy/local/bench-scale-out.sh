#!/usr/bin/env bash
# Scale-out comparison on one machine, for a quiet machine (it saturates 2 cores for minutes):
# the multi-turn shared-prefix workload against
#   single      1 replica  x 2 threads                      (pagedserve serve)
#   rr          2 replicas x 1 thread behind SMG round_robin (pagedserve cluster)
#   ca          2 replicas x 1 thread behind SMG cache_aware (pagedserve cluster)
# with the same total KV-cache memory, then prints output tok/s, TTFT p50/p99 and the prefix-cache
# hit rate of each. Everything listens on 127.0.0.1. Needs: pip install 'pagedserve[cluster]'.
#
#   deploy/local/bench-scale-out.sh                 # defaults below
#   CONCURRENCY=16 NUM_REQUESTS=240 KV_PER_REPLICA=128MiB deploy/local/bench-scale-out.sh
set -euo pipefail
PAGEDSERVE="${PAGEDSERVE:-pagedserve}"
OUT="${OUT:-bench-scale-out-$(date +%Y%m%d-%H%M%S)}"
CONCURRENCY="${CONCURRENCY:-8}"
NUM_REQUESTS="${NUM_REQUESTS:-120}"       # 2 rounds of 20 conversations x 3 turns
KV_PER_REPLICA="${KV_PER_REPLICA:-128MiB}" # the single replica gets twice this
KV_SINGLE="${KV_SINGLE:-256MiB}"
PORT="${PORT:-18000}"                      # gateway (or the single replica); replicas use PORT+1, PORT+2
WORKLOAD=(--workload multi-turn --prefix-len 512 --input-len 32 --output-len 64 --ignore-eos
          --chat-turns 3 --num-prefixes 4 --num-conversations 20)
mkdir -p "$OUT"

stop() {  # SIGTERM the process group of $1 and wait for it
  kill -TERM -- "-$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}

loadtest() {  # $1: name, then extra loadtest flags
  local name="$1"; shift
  "$PAGEDSERVE" loadtest --target openai --url "http://127.0.0.1:$PORT" "${WORKLOAD[@]}" \
    --concurrency "$CONCURRENCY" --num-requests "$NUM_REQUESTS" --warmup 0 --ready-timeout 900 \
    --no-plots --no-progress --out-dir "$OUT/$name" "$@" > "$OUT/$name.md"
}

echo "single: 1 replica x 2 threads, KV $KV_SINGLE" >&2
setsid "$PAGEDSERVE" serve --threads 2 --port 0 --http-port "$PORT" --kv-cache-memory "$KV_SINGLE" \
  > "$OUT/single-serve.log" 2>&1 &
pid=$!
loadtest single --metrics-url "http://127.0.0.1:$PORT/metrics" || { stop $pid; exit 1; }
stop $pid

replicas="http://127.0.0.1:$((PORT + 1))/metrics,http://127.0.0.1:$((PORT + 2))/metrics"
for policy in round_robin cache_aware; do
  echo "$policy: 2 replicas x 1 thread behind SMG, KV $KV_PER_REPLICA each" >&2
  setsid "$PAGEDSERVE" cluster --replicas 2 --threads 1 --policy "$policy" --port "$PORT" \
    --replica-port "$((PORT + 1))" --prometheus-port "$((PORT + 100))" --log-dir "$OUT/$policy-logs" \
    -- --kv-cache-memory "$KV_PER_REPLICA" > "$OUT/$policy-cluster.log" 2>&1 &
  pid=$!
  # loadtest waits for the gateway's /health; the cluster prints its line once every replica is in
  until grep -q "^gateway " "$OUT/$policy-cluster.log" 2>/dev/null; do
    kill -0 $pid 2>/dev/null || { cat "$OUT/$policy-cluster.log" >&2; exit 1; }
    sleep 1
  done
  loadtest "$policy" --replica-metrics-url "$replicas" || { stop $pid; exit 1; }
  stop $pid
done

"${PYTHON:-python3}" - "$OUT" <<'PY'
import json, sys
out = sys.argv[1]
print(f"| setup | output tok/s | TTFT p50 ms | TTFT p99 ms | prefix hit | failed |")
print("|---|---|---|---|---|---|")
for name, label in (("single", "1 replica x 2 threads"), ("round_robin", "2 x 1 thread, SMG round_robin"),
                    ("cache_aware", "2 x 1 thread, SMG cache_aware")):
    (level,) = json.load(open(f"{out}/{name}/result.json"))["levels"]
    s = level["summary"]
    if level.get("replicas"):
        hit = sum(r["prefix_hit_tokens"] or 0 for r in level["replicas"])
        queried = sum(r["prefix_queried_tokens"] or 0 for r in level["replicas"])
    else:
        hit, queried = (level["server"] or {}).get("prefix_hit_tokens") or 0, (level["server"] or {}).get("prefix_queried_tokens") or 0
    rate = f"{100 * hit / queried:.1f}%" if queried else "-"
    print(f"| {label} | {s['output_throughput']:.1f} | {s['ttft_ms']['p50']:.0f} | {s['ttft_ms']['p99']:.0f} "
          f"| {rate} | {s['failed']} |")
PY
echo "per-replica tables: $OUT/round_robin.md, $OUT/cache_aware.md" >&2
