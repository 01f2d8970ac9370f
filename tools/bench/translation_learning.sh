#!/usr/bin/env bash
# The learning bar of the encoder-decoder: transformer-small on the English ->
# Spanish Bible pairs (scripts/fetch_bible_pairs.sh) for STEPS steps in attn,
# then the PyTorch peer (tools/bench/translation_peer.py) on the very same
# micro-batches, tokenizer and recipe, one after the other with 2 threads
# each. Prints both validation losses, and BLEU / chrF of beam-4 translations
# of the held-out test books for both (scored by `attn eval`, so decoding and
# metrics are identical); draws docs/learning_translation.png.
# Needs tools/reference/setup.sh 5 first (torch).
#   tools/bench/translation_learning.sh [STEPS=600]
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.cache/venv-ref5/bin/python}
steps=${1:-600}
pairs=$(scripts/fetch_bible_pairs.sh)
cargo build --release -q
out=runs/translate-attn
peer=runs/translate-peer
echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2) | load before: $(cut -d' ' -f1-3 /proc/loadavg)"
./target/release/attn train --task translation --data "$pairs/train.tsv" --val-data "$pairs/val.tsv" --preset transformer-small \
  --tokenizer bpe:8000 --out "$out" --overwrite --steps "$steps" --eval-every 100 --batch-tokens 4096 --lr 1e-3 --warmup 100 \
  --threads 2 --export-plan runs/translate-plan.json | tail -1
$PY tools/bench/translation_peer.py "$out" runs/translate-plan.json "$peer" --threads 2 --metrics runs/translate-peer.jsonl | tail -1
for m in "$out" "$peer"; do
  echo "$m on the validation books: $(./target/release/attn eval --model "$m" --data "$pairs/val.tsv" --json --threads 2)"
  echo "$m on the test books, beam 4: $(./target/release/attn eval --model "$m" --data "$pairs/test.tsv" --beam 4 --json --threads 2)"
done
$PY - <<'PY'
import json
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
def load(p): return [json.loads(l) for l in open(p)]
a, t = load("runs/translate-attn/metrics.jsonl"), load("runs/translate-peer.jsonl")
fig, ax = plt.subplots(figsize=(9, 5.5))
for recs, name, c in [(a, "attn", "tab:red"), (t, "PyTorch nn.Transformer", "tab:blue")]:
    ax.plot([r["step"] for r in recs], [r["train_loss"] for r in recs], color=c, alpha=0.25, lw=0.8)
    v = [(r["step"], r["val_loss"]) for r in recs if "val_loss" in r]
    ax.plot(*zip(*v), color=c, lw=2.2, marker="o", label=f"{name} val (final {v[-1][1]:.3f})")
ax.set(xlabel="step", ylabel="loss (nats/token)", title="transformer-small, English -> Spanish Bible verses, 4096-token batches, 2 threads")
ax.legend(); ax.grid(alpha=0.3)
fig.savefig("docs/learning_translation.png", dpi=110, bbox_inches="tight")
PY
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
