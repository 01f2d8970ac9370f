/* MKL, PyTorch's BLAS, asks whether the CPU is an Intel one and, when it is
 * not, runs its generic kernels instead of the AVX-512 ones the CPU has. On
 * the AMD EPYCs these sessions get, that made the peer's sgemm 10-35% slower
 * than it can be (1024^3 on 2 Zen 4 cores: 176 GFLOP/s, 194 with this
 * library preloaded; 32 x 512 x 2048: 118 and 158). Preloaded into the peer
 * (tools/bench/mkl_full_path.sh), the two answers say yes, so the peer runs
 * as it would on an Intel CPU with the same instructions. */
int mkl_serv_intel_cpu_true(void) { return 1; }
int mkl_serv_intel_cpu(void) { return 1; }
