#!/usr/bin/env bash
# The learning bar of the encoder-decoder: transformer-small on the English ->
# Spanish Bible pairs (scripts/fetch_bible_pairs.sh) for STEPS steps in attn,
# then the PyTorch peer (tools/bench/translation_peer.py) on the very same
# micro-batches, tokenizer and recipe, one after the other with 2 threads
# each, once per seed in SEEDS (the seed sets attn's initialisation and batch
# order, and the peer's initialisation; each pair shares its batches). Prints
# both validation losses per seed and their means, and BLEU / chrF of beam-4
# translations of the held-out test books (scored by `attn eval`, so decoding
# and metrics are identical); draws docs/learning_translation.png from the
# first seed. Needs tools/reference/setup.sh 5 first (torch).
#
# INIT=shared (the default): both runs of a seed start from the very same
# weights (the peer's initialisation for that seed, written as a Marian
# folder and given to `attn train --init`), so they differ only in their
# arithmetic; INIT=own: each side initialises itself (same distribution,
# different draws), which adds the spread between initialisations.
#
# PARALLEL=1: attn and the peer of a seed train side by side, one thread
# each, the peer starting as soon as attn has written the plan (which holds
# the recipe): about half the wall time of taking turns on two threads. The
# thread count changes a run's arithmetic at most at rounding level (how
# products are cut between threads), its recipe and batches not at all.
#
# LR and WARMUP set the recipe's peak learning rate and warmup steps (1e-3
# and 100 unless given); the peer takes both from attn's plan. NORM=pre
# trains both sides pre-norm (mBART-shaped: final norms, learned positions,
# a norm on the embeddings) instead of the paper's post-norm (Marian).
#   SEEDS="1337 1 2" [INIT=shared|own] [PARALLEL=1] [LR=1e-3] [WARMUP=100] [NORM=post|pre] tools/bench/translation_learning.sh [STEPS=600]
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.cache/venv-ref5/bin/python}
steps=${1:-600}
seeds=(${SEEDS:-1337})
pairs=$(scripts/fetch_bible_pairs.sh)
attn=${ATTN:-./target/release/attn}
[ -n "${ATTN:-}" ] || cargo build --release -q
echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2) | load before: $(cut -d' ' -f1-3 /proc/loadavg)"
init=${INIT:-shared}
summary=runs/translate-seeds.jsonl
: > "$summary"
parallel=${PARALLEL:-0}
[ "$parallel" = 1 ] && [ "$init" != shared ] && { echo "PARALLEL=1 needs INIT=shared (the peer starts before attn writes its folder)" >&2; exit 2; }
threads=2
[ "$parallel" = 1 ] && threads=1
recipe=(--task translation --data "$pairs/train.tsv" --val-data "$pairs/val.tsv" --overwrite --steps "$steps" --eval-every 100
        --batch-tokens 4096 --lr "${LR:-1e-3}" --warmup "${WARMUP:-100}" --threads $threads)
model=(--preset transformer-small --tokenizer bpe:8000 --norm-position "${NORM:-post}")
if [ "$init" = shared ]; then
  # The joint BPE and the model's config.json (one step, thrown away).
  "$attn" train "${model[@]}" --task translation --data "$pairs/train.tsv" --val-data "$pairs/val.tsv" --steps 1 --threads 2 \
    --out runs/translate-vocab --overwrite --quiet > /dev/null
fi
for seed in "${seeds[@]}"; do
  out=runs/translate-attn-s$seed
  peer=runs/translate-peer-s$seed
  peer_init=()
  if [ "$init" = shared ]; then
    $PY tools/bench/translation_peer.py runs/translate-vocab --save-init "runs/translate-init-s$seed" --seed "$seed"
    model=(--init "runs/translate-init-s$seed")
    peer_init=(--init "runs/translate-init-s$seed")
  fi
  plan=runs/translate-plan-s$seed.json
  rm -f "$plan"
  if [ "$parallel" = 1 ]; then
    "$attn" train "${model[@]}" "${recipe[@]}" --out "$out" --seed "$seed" --export-plan "$plan" > "runs/translate-attn-s$seed.log" &
    pid=$!
    # The plan is complete once it parses; the peer takes the shapes and
    # tokenizer from the vocabulary run, which every seed shares.
    until $PY -c "import json, sys; json.load(open(sys.argv[1]))" "$plan" 2>/dev/null; do
      kill -0 $pid 2>/dev/null || { echo "attn train (seed $seed) stopped before writing its plan: runs/translate-attn-s$seed.log" >&2; exit 1; }
      sleep 2
    done
    peer_run=runs/translate-vocab
  else
    "$attn" train "${model[@]}" "${recipe[@]}" --out "$out" --seed "$seed" --export-plan "$plan" | tail -1
    peer_run=$out
  fi
  $PY tools/bench/translation_peer.py "$peer_run" "$plan" "$peer" --seed "$seed" --threads $threads "${peer_init[@]}" \
    --metrics "runs/translate-peer-s$seed.jsonl" | tail -1
  if [ "$parallel" = 1 ]; then
    wait $pid
    tail -1 "runs/translate-attn-s$seed.log"
  fi
  for m in "$out" "$peer"; do
    val=$("$attn" eval --model "$m" --data "$pairs/val.tsv" --json --threads 2)
    test=$("$attn" eval --model "$m" --data "$pairs/test.tsv" --beam 4 --json --threads 2)
    echo "$m: validation books $val; test books, beam 4: $test"
    echo "{\"seed\": $seed, \"model\": \"$m\", \"val\": $val, \"test\": $test}" >> "$summary"
  done
done
$PY - "$summary" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
for side in ("attn", "peer"):
    r = [x for x in rows if f"translate-{side}-" in x["model"]]
    val = [x["val"]["loss"] for x in r]
    print(f"{side}: val loss {' '.join(f'{v:.3f}' for v in val)} (mean {statistics.mean(val):.3f}); "
          f"test BLEU mean {statistics.mean(x['test']['bleu'] for x in r):.2f}, chrF mean {statistics.mean(x['test']['chrf'] for x in r):.1f}")
a = statistics.mean(x["val"]["loss"] for x in rows if "attn" in x["model"])
p = statistics.mean(x["val"]["loss"] for x in rows if "peer" in x["model"])
print(f"mean validation loss: attn {a:.3f}, peer {p:.3f}, difference {a - p:+.3f}")
PY
first=${seeds[0]}
FIRST=$first INIT=$init $PY - <<'PY'
import json
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
def load(p): return [json.loads(l) for l in open(p)]
import os
seed = os.environ["FIRST"]
a, t = load(f"runs/translate-attn-s{seed}/metrics.jsonl"), load(f"runs/translate-peer-s{seed}.jsonl")
fig, ax = plt.subplots(figsize=(9, 5.5))
for recs, name, c in [(a, "attn", "tab:red"), (t, "PyTorch nn.Transformer", "tab:blue")]:
    ax.plot([r["step"] for r in recs], [r["train_loss"] for r in recs], color=c, alpha=0.25, lw=0.8)
    v = [(r["step"], r["val_loss"]) for r in recs if "val_loss" in r]
    ax.plot(*zip(*v), color=c, lw=2.2, marker="o", label=f"{name} val (final {v[-1][1]:.3f})")
both = "the same initial weights" if os.environ["INIT"] == "shared" else "each its own initial weights"
ax.set(xlabel="step", ylabel="loss (nats/token)", title=f"transformer-small, English -> Spanish Bible verses, seed {seed}: {both}")
ax.legend(); ax.grid(alpha=0.3)
fig.savefig("docs/learning_translation.png", dpi=110, bbox_inches="tight")
PY
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
