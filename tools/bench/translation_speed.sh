#!/usr/bin/env bash
# The encoder-decoder speed bars, side by side on this machine with the same
# threads, alternating rounds (medians inside each command):
#  1. transformer-base training steps: `attn bench train --preset transformer-base`
#     against the torch.nn peer, eager f32 and bf16 autocast;
#  2. beam-4 translation: `attn bench translate` against transformers'
#     generate() on the same random Marian folder of transformer-base's shapes
#     (EOS pushed down, so both generate exactly --max-new-tokens per source).
# Needs tools/reference/setup.sh 5 (torch, transformers) and a translation run
# for its tokenizer (tools/bench/translation_learning.sh makes one).
#   tools/bench/translation_speed.sh [ROUNDS=3]
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.cache/venv-ref5/bin/python}
rounds=${1:-3}
pairs=$(scripts/fetch_bible_pairs.sh)
attn=${ATTN:-./target/release/attn}  # ATTN=binary: another build (tools/bench/as_avx2.sh)
[ -n "${ATTN:-}" ] || cargo build --release -q
tok=$(ls runs/translate-attn*/tokenizer.json 2>/dev/null | head -1)
[ -n "$tok" ] || { echo "no runs/translate-attn*/tokenizer.json: run tools/bench/translation_learning.sh first" >&2; exit 1; }
grep -o 'avx512[a-z_0-9]*\|avx2\|fma\|amx[a-z_0-9]*' /proc/cpuinfo | sort -u | tr '\n' ' '; echo
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
"$attn" bench gemm --threads 2
B=${B:-8}; T=${T:-64}
# Each round: f32 against eager f32, then bf16 products (`--dtype bf16`)
# against bf16 autocast (on a CPU without AMX attn's bf16 path is emulated).
# BF16=0 skips the bf16 pair: under tools/bench/as_avx2.sh oneDNN has no bf16
# kernel to run and autocast takes minutes a step.
for r in $(seq "$rounds"); do
  "$attn" bench train --preset transformer-base --batch-size "$B" --seq-len "$T" --vocab 8000 --steps 10 --threads 2 | tail -1
  $PY tools/bench/translation_speed.py train --preset transformer-base --batch-size "$B" --seq-len "$T" --vocab 8000 --steps 10 --threads 2
  [ "${BF16:-1}" = 0 ] && continue
  "$attn" bench train --preset transformer-base --batch-size "$B" --seq-len "$T" --vocab 8000 --steps 10 --threads 2 --dtype bf16 | tail -1
  $PY tools/bench/translation_speed.py train --preset transformer-base --batch-size "$B" --seq-len "$T" --vocab 8000 --steps 10 --threads 2 --autocast
done
model=runs/marian-base-random
[ -f "$model/model.safetensors" ] || $PY tools/bench/translation_speed.py make --preset transformer-base --tokenizer "$tok" --model "$model"
head -32 "$pairs/test.tsv" | cut -f1 > runs/translate-sources.txt
for r in $(seq "$rounds"); do
  "$attn" bench translate --model "$model" --data runs/translate-sources.txt --beam 4 --max-new-tokens 32 --batch-size 8 --rounds 1 --threads 2
  $PY tools/bench/translation_speed.py generate --model "$model" --data runs/translate-sources.txt --beam 4 --max-new-tokens 32 --batch-size 8 --rounds 1 --threads 2
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
