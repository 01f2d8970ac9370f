"""Validation curves of every translation learning seed found in runs/: attn
(runs/translate-attn-sSEED/metrics.jsonl) against its PyTorch peer
(runs/translate-peer-sSEED.jsonl), one colour a seed, attn solid and the peer
dashed, into docs/learning_translation_seeds.png. Run after
tools/bench/translation_learning.sh for the seeds to show.

  .cache/venv-ref5/bin/python tools/bench/plot_translation_seeds.py [SEED...]
"""
import glob
import json
import os
import re
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
os.chdir(ROOT)
seeds = sys.argv[1:] or sorted(re.sub(r".*-s(\d+)\.jsonl$", r"\1", p) for p in glob.glob("runs/translate-peer-s*.jsonl"))


def val(path):
    rows = [json.loads(line) for line in open(path)]
    return [(r["step"], r["val_loss"]) for r in rows if "val_loss" in r]


fig, ax = plt.subplots(figsize=(9, 5.5))
gaps = []
for i, seed in enumerate(seeds):
    a = val(f"runs/translate-attn-s{seed}/metrics.jsonl")
    p = val(f"runs/translate-peer-s{seed}.jsonl")
    c = f"C{i}"
    ax.plot(*zip(*a), color=c, lw=2, marker="o", label=f"seed {seed}: attn {a[-1][1]:.3f}")
    ax.plot(*zip(*p), color=c, lw=2, ls="--", marker="x", label=f"seed {seed}: PyTorch {p[-1][1]:.3f}")
    gaps.append(a[-1][1] - p[-1][1])
mean = sum(gaps) / len(gaps)
ax.set(xlabel="step", ylabel="validation loss (nats/token)",
       title=f"transformer-small, English -> Spanish, same weights per seed: mean gap attn - peer {mean:+.3f}")
ax.legend(ncol=2, fontsize=8)
ax.grid(alpha=0.3)
fig.savefig("docs/learning_translation_seeds.png", dpi=110, bbox_inches="tight")
print(f"seeds {' '.join(seeds)}: gaps {' '.join(f'{g:+.3f}' for g in gaps)}, mean {mean:+.3f} -> docs/learning_translation_seeds.png")
