#!/usr/bin/env bash
# A/B speed of two attn binaries on the decoder's training and generation,
# alternating rounds, medians reported with the load:
#   tools/bench/ab_decoder.sh OLD_BIN NEW_BIN [ROUNDS]
# e.g. the commit before the one Transformer against HEAD:
#   git worktree add /tmp/old 20707f3
#   (cd /tmp/old && CARGO_TARGET_DIR=/tmp/old-target cargo build --release -p attn-cli)
#   tools/bench/ab_decoder.sh /tmp/old-target/release/attn target/release/attn 3
set -euo pipefail
old=$1 new=$2 rounds=${3:-3}
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg); cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2)"
works=(
  "train gpt2-124m|bench train --preset gpt2-124m --batch-size 4 --seq-len 64 --steps 4 --threads 2"
  "train llama-baby|bench train --preset llama-baby --steps 20 --threads 2"
  "generate gpt2-124m|bench generate --preset gpt2-124m --prompt-len 64 --new-tokens 128 --threads 2"
  "generate llama-baby|bench generate --preset llama-baby --prompt-len 16 --new-tokens 48 --threads 2"
)
for r in $(seq "$rounds"); do
  for w in "${works[@]}"; do
    for b in "$old" "$new"; do
      # shellcheck disable=SC2086
      tps=$("$b" ${w#*|} 2>/dev/null | tail -1 | python3 -c 'import json,sys; print(round(json.load(sys.stdin)["tok_per_s"], 2))')
      echo "round $r|${w%%|*}|$b|$tps"
    done
  done
done | tee /dev/stderr | python3 -c '
import sys, statistics
by = {}
for l in sys.stdin:
    if l.startswith("round"):
        _, work, b, tps = l.strip().split("|")
        by.setdefault(work, {}).setdefault(b, []).append(float(tps))
for work, bins in by.items():
    (o, vo), (n, vn) = list(bins.items())
    mo, mn = statistics.median(vo), statistics.median(vn)
    print(f"{work:22s} old {mo:9.2f} tok/s  new {mn:9.2f} tok/s  new/old {mn / mo:.3f}")
'
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
