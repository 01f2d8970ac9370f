#!/usr/bin/env bash
# Every speed bar of issues 12 and 13 on this machine, in one command: each
# peer side by side with attn (same work, same threads, alternating rounds,
# medians inside each script), then one table of bar, measured ratio and
# whether it is met. The machines change between sessions (AVX2 only, AVX-512
# with or without AVX512-BF16 / AMX): run this on each kind and copy the
# table into docs/PERFORMANCE.md with the flags it prints.
#
# Needs tools/reference/setup.sh 5 (torch, transformers), .cache/gpt2-124m-random
# (compare_generate.py makes it) and a translation run's tokenizer
# (tools/bench/translation_learning.sh). About 25 minutes on 2 cores at ROUNDS=3.
#   tools/bench/bars.sh [ROUNDS=3]      # logs in runs/bars-DATE/
# PEER_MKL=full: on a non-Intel CPU, the PyTorch peer's MKL runs its AVX-512
# kernels instead of its generic ones (tools/bench/mkl_full_path.sh); the
# peer as shipped is the default.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.cache/venv-ref5/bin/python}
rounds=${1:-3}
cargo build --release -q
peer_mkl="as shipped"
if [ "${PEER_MKL:-}" = full ] && pre=$(tools/bench/mkl_full_path.sh) && [ -n "$pre" ]; then
  export LD_PRELOAD=$pre
  peer_mkl="AVX-512 path forced on this non-Intel CPU (tools/bench/mkl_full_path.sh)"
fi
out=runs/bars-$(date +%Y%m%d-%H%M)
mkdir -p "$out"
{
  echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2) | flags: $(grep -o 'avx512[a-z_0-9]*\|avx2\|fma\|amx[a-z_0-9]*' /proc/cpuinfo | sort -u | tr '\n' ' ')"
  echo "peer's MKL: $peer_mkl"
  echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
} | tee "$out/machine.txt"
./target/release/attn bench gemm --threads 2 | tail -1 | tee "$out/gemm.json"
# The two vCPUs' distance changes with the host's placement (~70 ns or ~320
# ns a round trip) and moves the small-step bars by a quarter: logged with the load.
trip() { grep -o '"core_round_trip_ns":[0-9.]*' "$1" | cut -d: -f2 | cut -d. -f1; }
echo "core round trip before: $(trip "$out/gemm.json") ns" >> "$out/machine.txt"
$PY tools/bench/compare_train.py --rounds "$rounds" | tee "$out/train_f32.jsonl"
bf16=$(grep -o '"bf16_path":"[a-z0-9-]*"' "$out/gemm.json" | cut -d'"' -f4)
if [ "$bf16" != f32-emulated ]; then
  $PY tools/bench/compare_train.py --rounds "$rounds" --dtype bf16 --only gpt2-124m | tee "$out/train_bf16.jsonl"
else
  echo "no bf16 tiles on this CPU (AMX or AVX512-BF16): the bf16 training bars do not apply" | tee "$out/train_bf16.jsonl"
fi
$PY tools/bench/compare_generate.py --rounds "$rounds" | tee "$out/generate.jsonl"
# Without bf16 instructions the autocast peer has no bf16 kernel (minutes a
# step), and attn's bf16 is emulated: the pair is no bar there.
skip_bf16=1; [ "$bf16" = f32-emulated ] && skip_bf16=0
BF16=$skip_bf16 tools/bench/translation_speed.sh "$rounds" | tee "$out/translation.jsonl"
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$out/machine.txt"
./target/release/attn bench gemm --threads 2 | tail -1 > "$out/gemm_after.json"
echo "core round trip after: $(trip "$out/gemm_after.json") ns" | tee -a "$out/machine.txt"
$PY tools/bench/bars_table.py "$out" | tee "$out/bars.md"
