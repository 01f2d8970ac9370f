#!/usr/bin/env bash
# The load bar of `attn serve`: 32 concurrent streaming clients x 128 tokens
# against --parallel 8, every response complete and identical to the same
# request alone at temperature 0; aggregate decode tok/s vs a single stream;
# p50 / p99 time to first token.
#
#   tools/bench/serve_load.sh [MODEL_DIR] [--parallel N] [--clients N] [--tokens N]
#
# MODEL_DIR defaults to a random-weight gpt2-124m saved by transformers
# (.cache/bench/gpt2-124m-random; tools/bench/compare_generate.py writes one);
# any decoder folder works. Prints the CPU flags,
# the load, the GEMM peak and the load generator's JSON.
set -euo pipefail
cd "$(dirname "$0")/../.."
model=${1:-.cache/bench/gpt2-124m-random}
shift || true
parallel=8 clients=32 tokens=128
while [ $# -gt 0 ]; do
  case $1 in
    --parallel) parallel=$2; shift 2 ;;
    --clients) clients=$2; shift 2 ;;
    --tokens) tokens=$2; shift 2 ;;
    *) echo "unknown argument $1"; exit 2 ;;
  esac
done
cargo build --release --quiet --bin attn
venv=.cache/venv-openai
[ -x $venv/bin/python ] && $venv/bin/python -c 'import openai' 2>/dev/null || { python3 -m venv $venv && $venv/bin/pip install -q openai==3.57.0; }
echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); $(nproc) cores; flags: $(grep -m1 flags /proc/cpuinfo | grep -o -w -E 'avx2|fma|avx512f|avx512_bf16|amx_tile|amx_bf16' | sort -u | xargs)"
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "gemm peak: $(./target/release/attn bench gemm 2>/dev/null | tail -1)"
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
mkdir -p runs
./target/release/attn serve --model "$model" --port "$port" --parallel "$parallel" 2> runs/serve-load.log &
pid=$!
trap 'kill $pid 2>/dev/null || true' EXIT
healthy() { python3 -c "import urllib.request, sys; urllib.request.urlopen(sys.argv[1])" "http://127.0.0.1:$port/health" 2>/dev/null; }
for _ in $(seq 300); do healthy && break; sleep 0.2; done
echo "model: $model, --parallel $parallel, $clients clients x $tokens tokens"
$venv/bin/python tools/bench/serve_load.py --url "http://127.0.0.1:$port" --clients "$clients" --tokens "$tokens"
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
kill -TERM $pid; wait $pid || true
trap - EXIT
