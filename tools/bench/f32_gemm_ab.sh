#!/usr/bin/env bash
# Whole training steps with two of attn's f32 GEMMs, alternated round by
# round: the gemm crate (the default) against attn's own kernel
# (crates/kernels/src/sgemm.rs), AVX-512 where the CPU has it and AVX2 + FMA
# otherwise (GEMM=avx2 picks the AVX2 one on an AVX-512 CPU too), on the
# shapes of issue 12's and 13's f32 training bars (CASES="preset B T;..."
# picks some). Prints each round and the medians in ms a step, with the CPU
# flags and the load. The question it answers: which GEMM should be the
# default on this CPU (docs/PERFORMANCE.md, "attn's own AVX-512 f32 kernel
# against the crate").
#   [GEMM=avx512|avx2] [CASES="transformer-base 8 64"] tools/bench/f32_gemm_ab.sh [ROUNDS=3] [STEPS=10]
set -euo pipefail
cd "$(dirname "$0")/../.."
rounds=${1:-3}
steps=${2:-10}
attn=${ATTN:-./target/release/attn}
[ -n "${ATTN:-}" ] || cargo build --release -q
own=${GEMM:-avx512}
grep -qw avx512f /proc/cpuinfo || own=${GEMM:-avx2}
[ "$own" = avx512 ] && ! grep -qw avx512f /proc/cpuinfo && { echo "f32_gemm_ab.sh: this CPU has no AVX-512 (GEMM=avx2 runs the AVX2 kernel)" >&2; exit 2; }
echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs) | flags: $(grep -o 'amx[a-z_0-9]*\|avx512[a-z_0-9]*\|avx2' /proc/cpuinfo | sort -u | xargs)"
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg); f32 peak: $("$attn" bench gemm | grep -o '"gflops":[0-9.]*' | head -1)"
IFS=';' read -r -a cases <<< "${CASES:-baby 12 64;llama-baby 12 64;gpt2-124m 4 64;gpt2-124m 1 1024;transformer-base 8 64}"
out=$(mktemp)
for r in $(seq 1 "$rounds"); do
  for c in "${cases[@]}"; do
    read -r preset b t <<< "$c"
    for gemm in gemm-crate "$own"; do
      ms=$(ATTN_F32_GEMM=$gemm "$attn" bench train --preset "$preset" --batch-size "$b" --seq-len "$t" --steps "$steps" \
        | grep -o '"ms_per_step":[0-9.]*' | cut -d: -f2)
      echo "$r $preset ${b}x$t $gemm $ms" | tee -a "$out"
    done
  done
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
python3 - "$out" "$own" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
own = sys.argv[2]
print(f"| preset | BxT | gemm crate ms | attn {own} ms | crate / {own} |")
print("|---|---|---|---|---|")
for key in dict.fromkeys((r[1], r[2]) for r in rows):
    med = {g: statistics.median(float(r[4]) for r in rows if (r[1], r[2]) == key and r[3] == g) for g in ("gemm-crate", own)}
    print(f"| {key[0]} | {key[1]} | {med['gemm-crate']:.1f} | {med[own]:.1f} | {med['gemm-crate'] / med[own]:.2f}x |")
PY
rm -f "$out"
