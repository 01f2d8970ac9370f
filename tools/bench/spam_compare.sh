#!/usr/bin/env bash
# The spam classifier side by side: all-MiniLM-L6-v2 fine-tuned for one epoch
# on the SpamAssassin training emails by attn and by the same recipe in a
# plain PyTorch loop (tools/bench/spam_peer.py), same threads, one after the
# other; both scored on the held-out test emails. Prints one JSON line per
# program and the ratio of their seconds per epoch.
# Needs: cargo build --release, scripts/fetch_minilm.sh, scripts/fetch_spam.sh,
# and a Python with torch + transformers (PY, default .cache/venv-ref5/bin/python).
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.cache/venv-ref5/bin/python}
THREADS=${THREADS:-2}
EPOCHS=${EPOCHS:-1}
model=$(scripts/fetch_minilm.sh)
data=$(scripts/fetch_spam.sh)
echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); flags: $(grep -m1 -o -w -E 'avx2|avx512f|avx512_bf16|amx_tile' /proc/cpuinfo | sort -u | xargs); load: $(cut -d' ' -f1-3 /proc/loadavg)"
out=runs/spam-minilm
target/release/attn train --task classify --init "$model" --data "$data/train.jsonl" --val-data "$data/test.jsonl" --out "$out" --overwrite \
  --seq-len 128 --batch-size 16 --epochs "$EPOCHS" --lr 5e-5 --warmup 25 --weight-decay 0.01 --eval-every 100000 --eval-batches 1 \
  --threads "$THREADS" --quiet > /dev/null
attn_s=$(tail -1 "$out/metrics.jsonl" | python3 -c 'import json,sys; print(json.load(sys.stdin)["elapsed_s"])')
target/release/attn eval --model "$out" --data "$data/test.jsonl" --seq-len 128 --batch-size 32 --json --out docs/spam_confusion.png --threads "$THREADS" \
  | python3 -c "import json,sys; r=json.load(sys.stdin); print(json.dumps({'attn': 'attn', 'accuracy': r['accuracy'], 'macro_f1': r['macro_f1'], 'confusion': r['confusion'], 's_per_epoch': $attn_s / $EPOCHS}))" \
  | tee /tmp/spam_attn.json
"$PY" tools/bench/spam_peer.py "$model" "$data/train.jsonl" "$data/test.jsonl" --epochs "$EPOCHS" --threads "$THREADS" | tee /tmp/spam_peer.json
python3 - <<'PY'
import json
a, p = json.load(open("/tmp/spam_attn.json")), json.load(open("/tmp/spam_peer.json"))
print(json.dumps({"accuracy_points_diff": round(100 * (a["accuracy"] - p["accuracy"]), 2), "speedup_per_epoch": round(p["s_per_epoch"] / a["s_per_epoch"], 3)}))
PY
