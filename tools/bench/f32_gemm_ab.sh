#!/usr/bin/env bash
# Whole training steps with attn's two f32 GEMMs, alternated round by round:
# the gemm crate (the default) against attn's own AVX-512 kernel
# (ATTN_F32_GEMM=avx512, crates/kernels/src/sgemm.rs), on the shapes of
# issue 12's and 13's f32 training bars. Prints each round and the medians
# in ms a step, with the CPU flags and the load. The question it answers:
# which GEMM should be the default on this CPU (docs/PERFORMANCE.md, "attn's
# own AVX-512 f32 kernel against the crate"). Needs AVX-512.
#   tools/bench/f32_gemm_ab.sh [ROUNDS=3] [STEPS=10]
set -euo pipefail
cd "$(dirname "$0")/../.."
rounds=${1:-3}
steps=${2:-10}
attn=${ATTN:-./target/release/attn}
[ -n "${ATTN:-}" ] || cargo build --release -q
grep -qw avx512f /proc/cpuinfo || { echo "f32_gemm_ab.sh: this CPU has no AVX-512; there is only one f32 GEMM here" >&2; exit 2; }
echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs) | flags: $(grep -o 'amx[a-z_0-9]*\|avx512[a-z_0-9]*\|avx2' /proc/cpuinfo | sort -u | xargs)"
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg); f32 peak: $("$attn" bench gemm | grep -o '"gflops":[0-9.]*' | head -1)"
cases=("baby 12 64" "llama-baby 12 64" "gpt2-124m 4 64" "gpt2-124m 1 1024" "transformer-base 8 64")
out=$(mktemp)
for r in $(seq 1 "$rounds"); do
  for c in "${cases[@]}"; do
    read -r preset b t <<< "$c"
    for gemm in gemm-crate avx512; do
      ms=$(ATTN_F32_GEMM=$gemm "$attn" bench train --preset "$preset" --batch-size "$b" --seq-len "$t" --steps "$steps" \
        | grep -o '"ms_per_step":[0-9.]*' | cut -d: -f2)
      echo "$r $preset ${b}x$t $gemm $ms" | tee -a "$out"
    done
  done
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
python3 - "$out" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
print("| preset | BxT | gemm crate ms | attn avx512 ms | crate / avx512 |")
print("|---|---|---|---|---|")
for key in dict.fromkeys((r[1], r[2]) for r in rows):
    med = {g: statistics.median(float(r[4]) for r in rows if (r[1], r[2]) == key and r[3] == g) for g in ("gemm-crate", "avx512")}
    print(f"| {key[0]} | {key[1]} | {med['gemm-crate']:.1f} | {med['avx512']:.1f} | {med['gemm-crate'] / med['avx512']:.2f}x |")
PY
rm -f "$out"
