"""Writes testdata/decoder_golden.safetensors: tiny random-init decoders from
Hugging Face transformers (5.x), at real sequence lengths, for attn's one
Transformer to match:

  gpt2          GPT2LMHeadModel at its full context (T = n_positions = 64)
  llama_gqa     LlamaForCausalLM (1 layer), 6 query heads sharing 2 KV heads, explicit head_dim 48
                (hidden 48, so not hidden/heads), rope_theta 5e5, separate lm_head; T = 64
  llama3_scaled LlamaForCausalLM with rope_scaling of type llama3 (factor 8, original
                context 64, head_dim 16), T = 96: wavelengths 6.3 (kept), 32 (blended) and
                167 and up (divided by 8) all occur
  qwen2_bias    Qwen2ForCausalLM (q/k/v biases), 4 query heads sharing 1 KV head; T = 64

For each: the config (metadata, as transformers 5 writes it), every parameter,
the logits and loss of micro-batch 0 and every gradient, then 10 AdamW steps
(lr 1e-2, betas 0.9/0.95, eps 1e-6, weight decay 0.1 on matrices but not embeddings,
norms or biases, global-norm clip 1.0) with grad_accum = 2 over two
micro-batches: the loss of every step and every parameter after the last.

Tensors: "{v}.param.{name}", "{v}.grad.{name}", "{v}.final.{name}", "{v}.logits",
"{v}.loss", "{v}.step_losses", "{v}.input_ids" (2, B, T), "{v}.targets" (2, B, T).

Run: tools/reference/setup.sh 5 && .cache/venv-ref5/bin/python tools/reference/decoder_golden.py
"""
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

torch.manual_seed(2026)
B, V = 2, 67
llama_common = dict(vocab_size=V, intermediate_size=64, num_hidden_layers=2, rms_norm_eps=1e-6, hidden_act="silu",
                    attn_implementation="eager", bos_token_id=1, eos_token_id=2)
variants = {
    "gpt2": (GPT2LMHeadModel, GPT2Config(vocab_size=V, n_positions=64, n_embd=32, n_layer=2, n_head=4, activation_function="gelu_new",
                                         resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, layer_norm_epsilon=1e-5,
                                         bos_token_id=1, eos_token_id=2, attn_implementation="eager"), 64),
    "llama_gqa": (LlamaForCausalLM, LlamaConfig(**{**llama_common, "num_hidden_layers": 1}, hidden_size=48, num_attention_heads=6, num_key_value_heads=2, head_dim=48,
                                                max_position_embeddings=128, tie_word_embeddings=False, rope_theta=500000.0), 64),
    "llama3_scaled": (LlamaForCausalLM, LlamaConfig(**llama_common, hidden_size=32, num_attention_heads=2, num_key_value_heads=1,
                                                    max_position_embeddings=256, tie_word_embeddings=True,
                                                    rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0,
                                                                     "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                                                     "original_max_position_embeddings": 64}), 96),
    "qwen2_bias": (Qwen2ForCausalLM, Qwen2Config(**llama_common, hidden_size=32, num_attention_heads=4, num_key_value_heads=1,
                                                 max_position_embeddings=128, tie_word_embeddings=False, rope_theta=1000000.0), 64),
}

tensors, meta = {}, {"torch": torch.__version__, "transformers": __import__("transformers").__version__}
for name, (cls, cfg, T) in variants.items():
    model = cls(cfg).float()
    model.train()  # no dropout anywhere, so train and eval agree
    with torch.no_grad():
        # Larger than the default init so differences in any op show in the outputs.
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    tokens = torch.randint(0, V, (2, B, T + 1))
    x, y = tokens[..., :-1], tokens[..., 1:]
    tensors[f"{name}.input_ids"] = x.to(torch.int32).contiguous()
    tensors[f"{name}.targets"] = y.to(torch.int32).contiguous()
    for n, p in model.named_parameters():
        tensors[f"{name}.param.{n}"] = p.detach().clone()
    logits = model(x[0]).logits
    loss = F.cross_entropy(logits.reshape(-1, V), y[0].reshape(-1))
    loss.backward()
    for n, p in model.named_parameters():
        tensors[f"{name}.grad.{n}"] = p.grad.detach().clone()
    tensors[f"{name}.logits"] = logits.detach()
    tensors[f"{name}.loss"] = loss.detach().reshape(1)

    is_embedding = lambda n: any(k in n for k in ("wte", "wpe", "embed_tokens"))
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2 and not is_embedding(n)]
    no_decay = [p for n, p in model.named_parameters() if not (p.dim() >= 2 and not is_embedding(n))]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=1e-2, betas=(0.9, 0.95), eps=1e-6, foreach=False)
    losses = []
    for step in range(10):
        opt.zero_grad()
        total = 0.0
        for micro in range(2):
            lg = model(x[micro]).logits
            l = F.cross_entropy(lg.reshape(-1, V), y[micro].reshape(-1))
            (l / 2).backward()
            total += l.item() / 2
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(total)
    tensors[f"{name}.step_losses"] = torch.tensor(losses, dtype=torch.float32)
    for n, p in model.named_parameters():
        tensors[f"{name}.final.{n}"] = p.detach().clone()
    meta[name] = cfg.to_json_string(use_diff=False)
    print(name, "T", T, "loss", loss.item(), "step losses", [round(v, 4) for v in losses])

save_file({k: v.contiguous() for k, v in tensors.items()}, "testdata/decoder_golden.safetensors", metadata=meta)
print("wrote testdata/decoder_golden.safetensors")
