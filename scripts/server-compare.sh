#!/usr/bin/env bash
# pagedserve against llama-server under the same loadtest, for a quiet machine (127.0.0.1 only):
# llama-server over HTTP, then pagedserve over HTTP and over gRPC, each started, measured, stopped.
#   LLAMA_SERVER=/path/llama-server scripts/server-compare.sh MODEL.gguf OUT_DIR
# Env: STREAMS (32), NUM_REQUESTS (96), INPUT_LEN (128), OUTPUT_LEN (128), LLAMA_CTX (slots x 2 x
# (input + output)), KV_MEMORY (pagedserve --kv-cache-memory, 512MiB), THREADS (2), SERVE_ARGS (more
# `pagedserve serve` flags, e.g. "--activation-bits 8").
# Prints each run's summary and the servers' peak RSS (VmHWM, read just before stopping).
set -euo pipefail
MODEL="$1"; OUT="$2"; mkdir -p "$OUT"
: "${LLAMA_SERVER:?set LLAMA_SERVER to the path of llama-server}"
PAGEDSERVE="${PAGEDSERVE:-pagedserve}"
STREAMS="${STREAMS:-32}"; NUM_REQUESTS="${NUM_REQUESTS:-96}"; INPUT_LEN="${INPUT_LEN:-128}"
OUTPUT_LEN="${OUTPUT_LEN:-128}"; THREADS="${THREADS:-2}"
LLAMA_CTX="${LLAMA_CTX:-$((STREAMS * 2 * (INPUT_LEN + OUTPUT_LEN)))}"
LOAD=(--concurrency "$STREAMS" --num-requests "$NUM_REQUESTS" --input-len "$INPUT_LEN" --output-len "$OUTPUT_LEN"
      --ignore-eos --no-plots --no-progress --ready-timeout 900 --timeout 900)

peak_rss() { grep VmHWM "/proc/$1/status" | awk '{print $2 " kB"}'; }
stop() { kill -TERM "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }

"$LLAMA_SERVER" -m "$MODEL" -np "$STREAMS" -c "$LLAMA_CTX" -t "$THREADS" --host 127.0.0.1 --port 18080 \
  > "$OUT/llama-server.log" 2>&1 &
pid=$!
"$PAGEDSERVE" loadtest --target openai --url http://127.0.0.1:18080 --prompt-format ids "${LOAD[@]}" \
  --out-dir "$OUT/llama-server-http" > "$OUT/llama-server-http.md"
echo "llama-server peak RSS: $(peak_rss $pid)" | tee "$OUT/llama-server.rss"
stop $pid

"$PAGEDSERVE" serve --model "$MODEL" --threads "$THREADS" --kv-cache-memory "${KV_MEMORY:-512MiB}" ${SERVE_ARGS:-} \
  --host 127.0.0.1 --port 18051 --http-host 127.0.0.1 --http-port 18000 > "$OUT/pagedserve.log" 2>&1 &
pid=$!
"$PAGEDSERVE" loadtest --target openai --url http://127.0.0.1:18000 --prompt-format ids "${LOAD[@]}" \
  --metrics-url http://127.0.0.1:18000/metrics --out-dir "$OUT/pagedserve-http" > "$OUT/pagedserve-http.md"
# another seed: other prompts of the same lengths, so the HTTP run's prompts are not prefix-cache hits
"$PAGEDSERVE" loadtest --target grpc --address 127.0.0.1:18051 "${LOAD[@]}" --seed 1 \
  --metrics-url http://127.0.0.1:18000/metrics --out-dir "$OUT/pagedserve-grpc" > "$OUT/pagedserve-grpc.md"
echo "pagedserve peak RSS: $(peak_rss $pid)" | tee "$OUT/pagedserve.rss"
stop $pid
for run in llama-server-http pagedserve-http pagedserve-grpc; do
  echo "== $run"; grep -E "^\| c=" "$OUT/$run.md" || true
done
