"""Writes a randomly initialised Llama-shaped model with a long context, as
transformers 5 saves it (config.json with rope_parameters, f32
model.safetensors), plus GPT-2's tokenizer files, for measuring attn's
inference memory: tools/bench/generate_memory.sh.

8 layers, 512 channels, 8 query heads sharing 2 KV heads, SwiGLU 1408,
vocabulary 50257, max_position_embeddings 32768, rope_theta 5e5.
"""
import shutil
import sys

import torch
from transformers import LlamaConfig, LlamaForCausalLM

out, tok_dir = sys.argv[1], sys.argv[2]
torch.manual_seed(0)
cfg = LlamaConfig(vocab_size=50257, hidden_size=512, intermediate_size=1408, num_hidden_layers=8, num_attention_heads=8,
                  num_key_value_heads=2, max_position_embeddings=32768, rope_theta=500000.0, tie_word_embeddings=False,
                  bos_token_id=50256, eos_token_id=50256)
LlamaForCausalLM(cfg).float().save_pretrained(out)
for f in ("vocab.json", "merges.txt"):
    shutil.copy(f"{tok_dir}/{f}", f"{out}/{f}")
print("wrote", out)
