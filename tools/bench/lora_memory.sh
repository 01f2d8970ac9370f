#!/usr/bin/env bash
# Peak resident memory of fine-tuning gpt2-124m (random weights, GPT-2's
# tokenizer) on 300 KB of Shakespeare at T=64: full fine-tuning (B=4) against
# LoRA (r 8 on q, k, v, o and the MLP) at B=4 and B=1, each in its own
# process. The bar for LoRA: the f32 weights + 25%. Activations grow with
# B x T (about 50 MB per sequence of 64 here), the rest does not.
# Needs: cargo build --release, scripts/fetch_tokenizers.sh, scripts/fetch_shakespeare.sh,
# and a Python with torch + transformers (PY, default .cache/venv-ref5/bin/python from tools/reference/setup.sh 5).
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.cache/venv-ref5/bin/python}
BASE=.cache/bench/gpt2-124m-random
if [ ! -f "$BASE/model.safetensors" ]; then
  "$PY" - "$BASE" <<'PY'
import sys, torch
from transformers import GPT2Config, GPT2LMHeadModel
torch.manual_seed(0)
GPT2LMHeadModel(GPT2Config()).save_pretrained(sys.argv[1])
PY
  cp .cache/tokenizers/gpt2/vocab.json .cache/tokenizers/gpt2/merges.txt "$BASE/"
fi
STEPS=${STEPS:-5}
head -c 300000 .cache/data/shakespeare.txt > .cache/bench/shakespeare-300k.txt
python3 - "$BASE" "$STEPS" <<'PY'
import json, os, resource, shutil, subprocess, sys
base, steps = sys.argv[1], sys.argv[2]
def run(name, b, extra):
    out = f".cache/bench/lora-mem-{name}"
    shutil.rmtree(out, ignore_errors=True)
    cmd = ["target/release/attn", "train", "--init", base, "--data", ".cache/bench/shakespeare-300k.txt", "--out", out, "--steps", steps,
           "--batch-size", str(b), "--seq-len", "64", "--eval-every", steps, "--eval-batches", "1", "--quiet"] + extra
    # A child per run: RUSAGE_CHILDREN's peak is the largest child so far, so full runs last.
    r = subprocess.run(["python3", "-c", "import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True); "
                        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"] + cmd, capture_output=True, text=True, check=True)
    lines = r.stdout.strip().splitlines()
    return int(lines[-1]) / 1024, json.loads(lines[-2])
params = 124_439_808
weights_mb = params * 4 / 2**20
lora = ["--lora-r", "8", "--lora-targets", "q,k,v,o,mlp"]
l1_mb, l1 = run("lora-b1", 1, lora)
l4_mb, l4 = run("lora-b4", 4, lora)
full_mb, full = run("full", 4, [])
print(json.dumps({"weights_mb": round(weights_mb), "full_b4_peak_rss_mb": round(full_mb), "lora_b4_peak_rss_mb": round(l4_mb),
                  "lora_b1_peak_rss_mb": round(l1_mb), "lora_b4_over_weights": round(l4_mb / weights_mb, 3),
                  "lora_b1_over_weights": round(l1_mb / weights_mb, 3), "bar": 1.25,
                  "lora_b4_tok_per_s": round(l4["tok_per_s"]), "full_b4_tok_per_s": round(full["tok_per_s"])}))
PY
