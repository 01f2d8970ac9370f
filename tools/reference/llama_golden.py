"""Writes testdata/llama_golden.safetensors: tiny random-init decoders of the
Llama family from Hugging Face transformers, with a batch, the logits, the
loss and every parameter gradient, for attn's Llama implementation to match:

  llama_gqa_tied    LlamaForCausalLM, 4 query heads sharing 2 KV heads, tied embeddings
  llama_mha_untied  LlamaForCausalLM, 4 heads, separate lm_head, rope_theta 500000
  qwen2_bias        Qwen2ForCausalLM (QKV bias), 4 query heads sharing 1 KV head

Tensors are named "{variant}.param.{hf name}", "{variant}.grad.{hf name}",
"{variant}.logits", "{variant}.loss"; the batch is "input_ids" and "targets";
each variant's config.json is in the metadata under its name.

Run: tools/reference/setup.sh && .cache/venv-ref/bin/python tools/reference/llama_golden.py
"""
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

torch.manual_seed(2024)
B, T, V = 2, 9, 61
common = dict(vocab_size=V, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
              max_position_embeddings=32, rms_norm_eps=1e-6, hidden_act="silu", attn_implementation="eager")
variants = {
    "llama_gqa_tied": (LlamaForCausalLM, LlamaConfig(**common, num_key_value_heads=2, tie_word_embeddings=True, rope_theta=10000.0)),
    "llama_mha_untied": (LlamaForCausalLM, LlamaConfig(**common, num_key_value_heads=4, tie_word_embeddings=False, rope_theta=500000.0)),
    "qwen2_bias": (Qwen2ForCausalLM, Qwen2Config(**common, num_key_value_heads=1, tie_word_embeddings=False, rope_theta=1000000.0)),
}
tokens = torch.randint(0, V, (B, T + 1))
x, y = tokens[:, :-1], tokens[:, 1:]
tensors = {"input_ids": x.to(torch.int32).contiguous(), "targets": y.to(torch.int32).contiguous()}
meta = {"torch": torch.__version__, "transformers": __import__("transformers").__version__}
for name, (cls, cfg) in variants.items():
    model = cls(cfg).float()
    model.train()
    # Larger than the default init so differences in any op show in the outputs.
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    logits = model(x).logits
    loss = F.cross_entropy(logits.reshape(-1, V), y.reshape(-1))
    loss.backward()
    for n, p in model.named_parameters():
        tensors[f"{name}.param.{n}"] = p.detach().clone()
        tensors[f"{name}.grad.{n}"] = p.grad.detach().clone()
    tensors[f"{name}.logits"] = logits.detach()
    tensors[f"{name}.loss"] = loss.detach().reshape(1)
    meta[name] = cfg.to_json_string(use_diff=False)
    print(name, "loss", loss.item(), "params", sum(p.numel() for p in model.parameters()))
save_file({k: v.contiguous() for k, v in tensors.items()}, "testdata/llama_golden.safetensors", metadata=meta)
print("wrote testdata/llama_golden.safetensors")
