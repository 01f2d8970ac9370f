#!/usr/bin/env bash
# Runs a side-by-side benchmark on the instruction paths of a CPU with AVX2 +
# FMA and no AVX-512, on this AVX-512 machine, for both sides:
#   attn:    built from HEAD without gemm's AVX-512 kernels (the crate's
#            `x86-v4` feature off; source and build under .cache/avx2/), its
#            own kernels at ATTN_SIMD=avx2, bf16 products emulated in f32
#            (ATTN_BF16_PATH=f32-emulated), as on an AVX2-only CPU;
#   PyTorch: ATEN_CPU_CAPABILITY=avx2, MKL_ENABLE_INSTRUCTIONS=AVX2 and
#            ONEDNN_MAX_CPU_ISA=AVX2.
# The scripts it wraps take the binary from $ATTN. What this shows is the
# code paths an AVX2 machine runs, on this machine's cores, caches and memory:
# a check between sessions on such a machine, not a measurement of one.
#   BF16=0 tools/bench/as_avx2.sh tools/bench/translation_speed.sh 3
#   tools/bench/as_avx2.sh .cache/venv-ref5/bin/python tools/bench/compare_train.py --rounds 3
set -euo pipefail
cd "$(dirname "$0")/../.."
[ $# -gt 0 ] || { sed -n '2,14p' "$0" >&2; exit 2; }
grep -qw avx512f /proc/cpuinfo || echo "note: this CPU has no AVX-512 to begin with; the cap changes nothing" >&2
src=.cache/avx2/src
rm -rf "$src" && mkdir -p "$src"
git archive HEAD | tar -x -C "$src"
# The workspace's one gemm line, without x86-v4; fail loudly if it moved.
sed -i 's/features = \["std", "rayon", "x86-v4"\]/features = ["std", "rayon"]/' "$src/Cargo.toml"
grep -q '^gemm = .*features = \["std", "rayon"\]' "$src/Cargo.toml" || { echo "as_avx2.sh: no gemm x86-v4 line in Cargo.toml to turn off" >&2; exit 1; }
echo "building attn ($(git rev-parse --short HEAD)) without gemm's AVX-512 kernels (a few minutes the first time)" >&2
(cd "$src" && CARGO_TARGET_DIR="$PWD/../target" cargo build --release -q -p attn-cli)
export ATTN=$PWD/.cache/avx2/target/release/attn ATTN_SIMD=avx2 ATTN_BF16_PATH=f32-emulated
export ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2 ONEDNN_MAX_CPU_ISA=AVX2
echo "as AVX2: attn $("$ATTN" bench gemm --size 512 | tail -1 | grep -o '"simd":"[a-z0-9]*"'); PyTorch capped by ATEN_CPU_CAPABILITY / MKL / oneDNN" >&2
exec "$@"
