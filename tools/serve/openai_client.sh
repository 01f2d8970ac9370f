#!/usr/bin/env bash
# The real OpenAI Python client against `attn serve` (the issue's "real
# client" bar; .ci/run runs it). Trains a small chat model (SFT on synthetic
# arithmetic chats, ChatML, a few seconds), serves it with the real
# all-MiniLM-L6-v2 for embeddings and an API key, runs
# tools/serve/check_openai_client.py with PyPI's `openai` (pinned, in
# .cache/venv-openai), then stops the server with SIGTERM (a graceful drain).
set -euo pipefail
cd "$(dirname "$0")/../.."
attn=./target/release/attn
cargo build --release --quiet --bin attn
scripts/fetch_minilm.sh >/dev/null
venv=.cache/venv-openai
[ -x $venv/bin/python ] && $venv/bin/python -c 'import openai' 2>/dev/null || { python3 -m venv $venv && $venv/bin/pip install -q openai==3.57.0; }

mkdir -p runs
python3 - > runs/arith-chats.jsonl <<'PY'
import json, random
r = random.Random(7)
for i in range(400):
    msgs = []
    for _ in range(1 + i % 2):
        a, b = r.randrange(10), r.randrange(10)
        msgs += [{"role": "user", "content": f"What is {a} plus {b}?"}, {"role": "assistant", "content": f"{a} + {b} = {a + b}"}]
    print(json.dumps({"messages": msgs}))
PY
[ -s runs/chat-small/model.safetensors ] || $attn train --task sft --data runs/arith-chats.jsonl --out runs/chat-small --overwrite \
  --preset baby --tokenizer bpe:300 --steps 150 --batch-size 16 --eval-every 150 --eval-batches 2 --lr 3e-3 --warmup 20 --quiet >/dev/null

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
key=ci-key-$RANDOM
log=runs/serve-openai.log
$attn serve --model runs/chat-small --embedding-model .cache/models/all-MiniLM-L6-v2 --port "$port" --api-key "$key" --parallel 4 2> "$log" &
pid=$!
trap 'kill $pid 2>/dev/null || true' EXIT
healthy() { python3 -c "import urllib.request, sys; urllib.request.urlopen(sys.argv[1])" "http://127.0.0.1:$port/health" 2>/dev/null; }
for _ in $(seq 100); do healthy && break; sleep 0.2; done
healthy || { cat "$log"; echo "attn serve did not become healthy"; exit 1; }
$venv/bin/python tools/serve/check_openai_client.py --url "http://127.0.0.1:$port" --api-key "$key" --attn $attn --model-dir runs/chat-small --embeddings
kill -TERM $pid
wait $pid
trap - EXIT
grep -q "shutting down" "$log"
