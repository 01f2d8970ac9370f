"""Writes testdata/gpt2_golden.safetensors: a tiny random-init GPT-2 from
Hugging Face transformers, a batch, its logits, loss, every parameter gradient,
and the losses of 10 AdamW steps (with global-norm clipping).

attn's test `crates/train/tests/golden.rs` loads this file and compares.
Run: tools/reference/setup.sh && .cache/venv-ref/bin/python tools/reference/gpt2_golden.py
"""
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from transformers import GPT2Config, GPT2LMHeadModel

torch.manual_seed(1234)
B, T, V = 3, 10, 67
cfg = GPT2Config(vocab_size=V, n_positions=16, n_embd=32, n_layer=2, n_head=4,
                 activation_function="gelu_new", resid_pdrop=0.0, embd_pdrop=0.0,
                 attn_pdrop=0.0, layer_norm_epsilon=1e-5, tie_word_embeddings=True)
model = GPT2LMHeadModel(cfg).float()
model.train()  # dropout is 0, so train and eval agree
# Larger than the 0.02 init so differences in any op are visible in the outputs.
with torch.no_grad():
    for p in model.parameters():
        p.add_(torch.randn_like(p) * 0.1)

tokens = torch.randint(0, V, (B, T + 1))
x, y = tokens[:, :-1], tokens[:, 1:]

tensors = {f"param.{n}": p.detach().clone() for n, p in model.named_parameters()}
logits = model(x).logits
loss = F.cross_entropy(logits.reshape(-1, V), y.reshape(-1))
loss.backward()
tensors.update({f"grad.{n}": p.grad.detach().clone() for n, p in model.named_parameters()})
tensors["input_ids"] = x.to(torch.int32).contiguous()
tensors["targets"] = y.to(torch.int32).contiguous()
tensors["logits"] = logits.detach()
tensors["loss"] = loss.detach().reshape(1)

# AdamW exactly as attn configures it by default: weight decay on matrices only
# (not on embeddings, norms or biases).
decay = [p for n, p in model.named_parameters() if p.dim() >= 2 and "wte" not in n and "wpe" not in n]
no_decay = [p for n, p in model.named_parameters() if not (p.dim() >= 2 and "wte" not in n and "wpe" not in n)]
opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                        lr=1e-2, betas=(0.9, 0.95), eps=1e-8, foreach=False)
losses = []
for step in range(10):
    opt.zero_grad()
    logits = model(x).logits
    loss = F.cross_entropy(logits.reshape(-1, V), y.reshape(-1))
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    losses.append(loss.item())
tensors["step_losses"] = torch.tensor(losses, dtype=torch.float32)

meta = {"torch": torch.__version__, "transformers": __import__("transformers").__version__,
        "config": cfg.to_json_string(use_diff=False)}
save_file({k: v.contiguous() for k, v in tensors.items()}, "testdata/gpt2_golden.safetensors", metadata=meta)
print("wrote testdata/gpt2_golden.safetensors; loss", tensors["loss"].item(), "step losses", losses)
