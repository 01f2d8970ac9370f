"""Writes testdata/sft_golden.safetensors: the supervised fine-tuning loss of
transformers 5.x on right-padded batches whose prompts and padding carry the
label -100, for attn's masked cross-entropy to match.

For each variant (GPT-2, and a Qwen2 with grouped-query heads and RoPE):
B = 3 examples of lengths 64, 41 and 17, right-padded to T = 64, each a prompt
(labels -100) followed by a completion (labels = the ids). transformers is
called as a fine-tuning script calls it: model(input_ids, attention_mask,
labels), which shifts the labels by one and averages over labelled positions.

Tensors: "{v}.param.{name}", "{v}.grad.{name}", "{v}.input_ids" (B, T),
"{v}.labels" (B, T, -100 where ignored), "{v}.attention_mask" (B, T),
"{v}.logits" (B, T, V), "{v}.loss" (1). Metadata: "{v}" is config.json's text.

Run: tools/reference/setup.sh 5 && .cache/venv-ref5/bin/python tools/reference/sft_golden.py
"""
import json

import torch
from safetensors.torch import save_file
from transformers import GPT2Config, GPT2LMHeadModel, Qwen2Config, Qwen2ForCausalLM

torch.manual_seed(14)
V, T = 67, 64
lengths, prompt_lengths = [64, 41, 17], [20, 30, 5]
variants = {
    "gpt2": (GPT2LMHeadModel, GPT2Config(vocab_size=V, n_positions=T, n_embd=32, n_layer=2, n_head=4, activation_function="gelu_new",
                                         resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=1, eos_token_id=2,
                                         attn_implementation="eager")),
    "qwen2": (Qwen2ForCausalLM, Qwen2Config(vocab_size=V, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                                            num_key_value_heads=2, max_position_embeddings=128, rms_norm_eps=1e-6, tie_word_embeddings=False,
                                            rope_theta=10000.0, bos_token_id=1, eos_token_id=2, attn_implementation="eager")),
}

tensors, meta = {}, {"torch": torch.__version__, "transformers": __import__("transformers").__version__}
for name, (cls, cfg) in variants.items():
    model = cls(cfg).float()
    model.train()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    B = len(lengths)
    ids = torch.zeros(B, T, dtype=torch.long)
    labels = torch.full((B, T), -100, dtype=torch.long)
    mask = torch.zeros(B, T, dtype=torch.long)
    for i, (n, p) in enumerate(zip(lengths, prompt_lengths)):
        ids[i, :n] = torch.randint(3, V, (n,))
        mask[i, :n] = 1
        labels[i, p:n] = ids[i, p:n]
    out = model(input_ids=ids, attention_mask=mask, labels=labels)
    out.loss.backward()
    for n, p in model.named_parameters():
        tensors[f"{name}.param.{n}"] = p.detach().clone()
        tensors[f"{name}.grad.{n}"] = p.grad.detach().clone()
    tensors[f"{name}.input_ids"] = ids.to(torch.int32)
    tensors[f"{name}.labels"] = labels.to(torch.int32)
    tensors[f"{name}.attention_mask"] = mask.to(torch.int32)
    tensors[f"{name}.logits"] = out.logits.detach().contiguous()
    tensors[f"{name}.loss"] = out.loss.detach().reshape(1)
    meta[name] = cfg.to_json_string()

save_file(tensors, "testdata/sft_golden.safetensors", metadata=meta)
print({k: tensors[f"{k}.loss"].item() for k in variants})
