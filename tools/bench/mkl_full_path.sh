#!/usr/bin/env bash
# Prints an LD_PRELOAD value that lets the PyTorch peer's MKL run its AVX-512
# kernels on a non-Intel CPU (tools/bench/mkl_full_path.c says why), building
# the library once into .cache/bench/; prints nothing on an Intel CPU, where
# MKL already does. The peer is then measured at its best on this machine:
#   LD_PRELOAD=$(tools/bench/mkl_full_path.sh) .cache/venv-ref5/bin/python tools/bench/compare_train.py
# (`PEER_MKL=full tools/bench/bars.sh` does this for every bar). attn does not
# use MKL, so the preload changes nothing on its side.
set -euo pipefail
cd "$(dirname "$0")/../.."
grep -q -m1 GenuineIntel /proc/cpuinfo && exit 0
lib=.cache/bench/libmkl_full_path.so
if [ ! -f "$lib" ] || [ tools/bench/mkl_full_path.c -nt "$lib" ]; then
  mkdir -p .cache/bench
  cc -shared -fPIC -O2 -o "$lib" tools/bench/mkl_full_path.c
fi
realpath "$lib"
