#!/usr/bin/env bash
# Creates the pinned reference stacks (torch, transformers) under .cache/:
#   tools/reference/setup.sh       .cache/venv-ref   transformers 4.46 (older fixtures, peer benchmarks)
#   tools/reference/setup.sh 5     .cache/venv-ref5  transformers 5.24 (decoder_golden.py, check_generate.py)
# A few GB from PyPI; needed only to regenerate fixtures or run peer benchmarks.
set -euo pipefail
cd "$(dirname "$0")/../.."
if [ "${1:-}" = "5" ]; then
  venv=.cache/venv-ref5 req=tools/reference/requirements-5.txt
else
  venv=.cache/venv-ref req=tools/reference/requirements.txt
fi
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
"$venv/bin/pip" install -q -r "$req"
echo "$venv ready"
