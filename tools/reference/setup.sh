#!/usr/bin/env bash
# Creates .cache/venv-ref with the pinned reference stack (torch, transformers).
# About 3 GB from PyPI; needed only to regenerate fixtures or run peer benchmarks.
set -euo pipefail
cd "$(dirname "$0")/../.."
if [ ! -x .cache/venv-ref/bin/python ]; then
  python3 -m venv .cache/venv-ref
fi
.cache/venv-ref/bin/pip install -q -r tools/reference/requirements.txt
echo ".cache/venv-ref ready"
