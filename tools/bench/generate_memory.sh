#!/usr/bin/env bash
# Peak resident memory of `attn generate` on a 2k-token prompt, against the
# bar 1.15 x (f32 weights + the KV cache the request needs) + 150 MB.
# Model: a random Llama with a 32k context (tools/bench/make_long_llama.py).
# Needs: cargo build --release, scripts/fetch_tokenizers.sh, scripts/fetch_shakespeare.sh,
# and a Python with torch + transformers (PY, default .cache/venv-ref5/bin/python from tools/reference/setup.sh 5).
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.cache/venv-ref5/bin/python}
MODEL=.cache/bench/llama-long
[ -f "$MODEL/model.safetensors" ] || "$PY" tools/bench/make_long_llama.py "$MODEL" .cache/tokenizers/gpt2
# About 2,000 GPT-2 tokens of Shakespeare.
head -c 6950 .cache/data/shakespeare.txt > .cache/bench/prompt.txt
NEW=32
python3 - "$MODEL" "$NEW" <<'PY'
import json, resource, subprocess, sys, os
model, new = sys.argv[1], int(sys.argv[2])
out = subprocess.run(["target/release/attn", "generate", "--model", model, "--prompt-file", ".cache/bench/prompt.txt",
                      "--max-new-tokens", str(new), "--ignore-eos", "--temperature", "0", "--json"], capture_output=True, text=True, check=True)
peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
r = json.loads(out.stdout)
cfg = json.load(open(f"{model}/config.json"))
prompt = r["usage"]["prompt_tokens"]
c, l, v, f = cfg["hidden_size"], cfg["num_hidden_layers"], cfg["vocab_size"], cfg["intermediate_size"]
kvw = cfg["num_key_value_heads"] * c // cfg["num_attention_heads"]
params = 2 * v * c + l * (2 * c + c * (c + 2 * kvw) + c * c + 3 * c * f) + c
weights_mb = params * 4 / 1e6
kv_mb = 2 * 4 * l * (prompt + new) * kvw / 1e6
bar = 1.15 * (weights_mb + kv_mb) + 150
print(json.dumps({"prompt_tokens": prompt, "completion_tokens": r["usage"]["completion_tokens"], "context": cfg["max_position_embeddings"],
                  "weights_mb": round(weights_mb, 1), "kv_cache_mb": round(kv_mb, 1), "peak_rss_mb": round(peak_mb, 1),
                  "bar_mb": round(bar, 1), "within_bar": peak_mb <= bar, "timings": r["timings"]}))
PY
