#!/usr/bin/env bash
# A/B timing of `attn bench generate` for two attn binaries, alternating
# rounds on the same model, to show that a change costs generation nothing.
#   tools/bench/ab_generate.sh OLD_BIN NEW_BIN MODEL_DIR [ROUNDS]
# e.g. the commit before `attn inspect` against HEAD:
#   git worktree add /tmp/attn-before d9236f4
#   (cd /tmp/attn-before && CARGO_TARGET_DIR=/tmp/attn-before-target cargo build --release -p attn-cli)
#   tools/bench/ab_generate.sh /tmp/attn-before-target/release/attn target/release/attn .cache/gpt2-124m-random 3
set -euo pipefail
old=$1 new=$2 model=$3 rounds=${4:-3}
echo "load before: $(cut -d' ' -f1 /proc/loadavg)"
for r in $(seq "$rounds"); do
  for b in "$old" "$new"; do
    tps=$("$b" bench generate --model "$model" --threads 2 2>/dev/null | tail -1 | python3 -c 'import json,sys; print(round(json.load(sys.stdin)["tok_per_s"], 2))')
    echo "round $r  $b  $tps tok/s"
  done
done | tee /dev/stderr | python3 -c '
import sys, statistics
rows = [l.split() for l in sys.stdin if l.startswith("round")]
by = {}
for r in rows: by.setdefault(r[2], []).append(float(r[3]))
meds = [statistics.median(v) for v in by.values()]
for b, v in by.items(): print(f"median {statistics.median(v):.2f} tok/s  {b}")
print(f"new / old = {meds[1] / meds[0]:.3f}")
'
echo "load after: $(cut -d' ' -f1 /proc/loadavg)"
