#!/usr/bin/env bash
# Trains the `baby` preset with the char tokenizer on Shakespeare for 2000
# steps in attn and in PyTorch (tools/bench/torch_gpt.py), one after the other
# with 2 threads each, and draws both validation curves into docs/learning_baby.png.
# Needs tools/reference/setup.sh first. Takes ~6 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=.cache/venv-ref/bin/python
data=$(scripts/fetch_shakespeare.sh)
cargo build --release -q
common=(--steps 2000 --batch-size 12 --seq-len 64 --lr 1e-3 --warmup 100 --eval-every 100 --eval-batches 100 --seed 1337)
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
rm -rf runs/learn-attn
./target/release/attn train --data "$data" --out runs/learn-attn --preset baby --tokenizer char --threads 2 --quiet "${common[@]}" | tail -1
$PY tools/bench/torch_gpt.py train --data "$data" --preset baby --threads 2 --metrics runs/learn-torch.jsonl "${common[@]}"
$PY - <<'PY'
import json
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
def load(p): return [json.loads(l) for l in open(p)]
a, t = load("runs/learn-attn/metrics.jsonl"), load("runs/learn-torch.jsonl")
fig, ax = plt.subplots(figsize=(9, 5.5))
for recs, name, c in [(a, "attn", "tab:red"), (t, "PyTorch eager", "tab:blue")]:
    ax.plot([r["step"] for r in recs], [r["train_loss"] for r in recs], color=c, alpha=0.25, lw=0.8)
    v = [(r["step"], r["val_loss"]) for r in recs if "val_loss" in r]
    ax.plot(*zip(*v), color=c, lw=2.2, label=f"{name} val (final {v[-1][1]:.3f})")
ax.set(xlabel="step", ylabel="loss (nats/char)", title="baby preset, char-level Shakespeare, B=12 T=64, 2 threads", ylim=(1.3, 3.5))
ax.legend(); ax.grid(alpha=0.3)
fig.savefig("docs/learning_baby.png", dpi=110, bbox_inches="tight")
va, vt = [r["val_loss"] for r in a if "val_loss" in r][-1], [r["val_loss"] for r in t if "val_loss" in r][-1]
print(json.dumps({"attn_val_loss": va, "pytorch_val_loss": vt, "difference": va - vt}))
PY
