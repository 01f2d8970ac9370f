"""PyTorch eager peer for attn's training benchmarks and learning comparison.

The model is GPT-2 exactly as attn builds it (pre-LayerNorm, tanh GELU, tied
head, learned positions, GPT-2 init), written as a plain nn.Module with
torch's fused scaled_dot_product_attention, which is the fastest eager path.
For the llama-baby preset it is transformers' LlamaForCausalLM of the same
shape (bench only).

  bench: time full training steps on random tokens   -> one JSON line
  train: train on a text file with attn's recipe      -> metrics JSONL + final JSON line
"""
import argparse, json, math, os, resource, time

import torch
import torch.nn as nn
import torch.nn.functional as F

PRESETS = {
    "gpt2-124m": dict(vocab=50257, ctx=1024, layers=12, heads=12, embd=768),
    "shakespeare-char": dict(vocab=65, ctx=256, layers=6, heads=6, embd=384),
    "baby": dict(vocab=65, ctx=64, layers=4, heads=4, embd=128),
}


class LlamaPeer(nn.Module):
    """attn's llama-baby as transformers' LlamaForCausalLM (sdpa attention,
    the fastest eager path), returning the mean cross-entropy."""

    def __init__(self, vocab):
        super().__init__()
        from transformers import LlamaConfig, LlamaForCausalLM
        cfg = LlamaConfig(vocab_size=vocab, hidden_size=128, intermediate_size=344, num_hidden_layers=4, num_attention_heads=4,
                          num_key_value_heads=2, max_position_embeddings=64, rms_norm_eps=1e-5, rope_theta=10000.0,
                          tie_word_embeddings=True, attn_implementation="sdpa")
        self.m = LlamaForCausalLM(cfg)

    def forward(self, x, y):
        logits = self.m(x).logits
        return F.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1))


class Block(nn.Module):
    def __init__(self, c, nh):
        super().__init__()
        self.nh = nh
        self.ln_1, self.ln_2 = nn.LayerNorm(c), nn.LayerNorm(c)
        self.c_attn, self.c_proj = nn.Linear(c, 3 * c), nn.Linear(c, c)
        self.c_fc, self.mlp_proj = nn.Linear(c, 4 * c), nn.Linear(4 * c, c)

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.c_attn(self.ln_1(x)).split(C, dim=2)
        q, k, v = (t.view(B, T, self.nh, C // self.nh).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.c_proj(y.transpose(1, 2).contiguous().view(B, T, C))
        return x + self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x)), approximate="tanh"))


class GPT(nn.Module):
    def __init__(self, vocab, ctx, layers, heads, embd):
        super().__init__()
        self.wte, self.wpe = nn.Embedding(vocab, embd), nn.Embedding(ctx, embd)
        self.h = nn.ModuleList(Block(embd, heads) for _ in range(layers))
        self.ln_f = nn.LayerNorm(embd)
        for n, p in self.named_parameters():
            if p.dim() >= 2:
                std = 0.02 / math.sqrt(2 * layers) if n.endswith(("c_proj.weight", "mlp_proj.weight")) else 0.02
                nn.init.normal_(p, 0.0, std)
            elif n.endswith("bias"):
                nn.init.zeros_(p)

    def forward(self, idx, targets):
        x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1]))
        for b in self.h:
            x = b(x)
        logits = self.ln_f(x) @ self.wte.weight.T
        return F.cross_entropy(logits.view(-1, logits.shape[-1]), targets.view(-1))


def optimizer(model, lr, betas, wd):
    # attn's default: decay on weight matrices only, not embeddings, norms or biases.
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2 and not n.startswith(("wte", "wpe"))]
    rest = [p for n, p in model.named_parameters() if not (p.dim() >= 2 and not n.startswith(("wte", "wpe")))]
    return torch.optim.AdamW([{"params": decay, "weight_decay": wd}, {"params": rest, "weight_decay": 0.0}], lr=lr, betas=betas, eps=1e-8)


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bench(a):
    llama = a.preset == "llama-baby"
    cfg = dict(PRESETS["baby"] if llama else PRESETS[a.preset])
    if a.vocab:
        cfg["vocab"] = a.vocab
    T = a.seq_len or cfg["ctx"]
    torch.manual_seed(0)
    model = LlamaPeer(cfg["vocab"]) if llama else GPT(**cfg)
    if llama:
        # Decay on matrices only, as attn does: not embeddings or norms.
        decay = [p for n, p in model.named_parameters() if p.dim() >= 2 and "embed" not in n]
        rest = [p for n, p in model.named_parameters() if not (p.dim() >= 2 and "embed" not in n)]
        opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": rest, "weight_decay": 0.0}], lr=1e-4, betas=(0.9, 0.95), eps=1e-8)
    else:
        opt = optimizer(model, 1e-4, (0.9, 0.95), 0.1)
    x = torch.randint(0, cfg["vocab"], (a.batch_size, T))
    y = torch.randint(0, cfg["vocab"], (a.batch_size, T))
    times = []
    # bf16: autocast runs the linear layers (and what it lists as safe) in bf16,
    # with f32 master weights and optimizer, as `attn bench train --dtype bf16`.
    cast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=a.dtype == "bf16")
    for i in range(a.steps + 2):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        with cast:
            loss = model(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if i >= 2:
            times.append(time.perf_counter() - t0)
    med = sorted(times)[len(times) // 2]
    peer = f"pytorch {torch.__version__} eager" + (" bf16 autocast" if a.dtype == "bf16" else "")
    print(json.dumps({"peer": peer, "dtype": a.dtype, "preset": a.preset, "batch_size": a.batch_size, "seq_len": T,
                      "threads": torch.get_num_threads(), "ms_per_step": med * 1e3, "tok_per_s": a.batch_size * T / med,
                      "peak_rss_mb": peak_rss_mb()}))


def train(a):
    text = open(a.data, encoding="utf-8").read()
    chars = sorted(set(text))  # the same vocabulary attn's char tokenizer builds
    stoi = {c: i for i, c in enumerate(chars)}
    ids = torch.tensor([stoi[c] for c in text], dtype=torch.long)
    n_val = round(len(ids) * 0.1)
    train_ids, val_ids = ids[: len(ids) - n_val], ids[len(ids) - n_val:]
    cfg = dict(PRESETS[a.preset], vocab=len(chars))
    B, T = a.batch_size, a.seq_len or cfg["ctx"]
    torch.manual_seed(a.seed)
    model = GPT(**cfg)
    opt = optimizer(model, a.lr, (0.9, 0.99), 0.1)
    gen = torch.Generator().manual_seed(a.seed)

    def batch(data, g):
        ix = torch.randint(len(data) - T, (B,), generator=g)
        return torch.stack([data[i:i + T] for i in ix]), torch.stack([data[i + 1:i + 1 + T] for i in ix])

    def lr_at(step):
        if step <= a.warmup:
            return a.lr * step / a.warmup
        p = min((step - a.warmup) / max(a.steps - a.warmup, 1), 1.0)
        return a.lr / 10 + (a.lr - a.lr / 10) * 0.5 * (1 + math.cos(math.pi * p))

    val_gen = torch.Generator().manual_seed(a.seed + 1)
    val_batches = [batch(val_ids, val_gen) for _ in range(a.eval_batches)]
    log = open(a.metrics, "w") if a.metrics else None
    t_start = time.perf_counter()
    for step in range(1, a.steps + 1):
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        x, y = batch(train_ids, gen)
        loss = model(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        rec = {"step": step, "train_loss": loss.item()}
        if step % a.eval_every == 0 or step == a.steps:
            with torch.no_grad():
                rec["val_loss"] = sum(model(vx, vy).item() for vx, vy in val_batches) / len(val_batches)
        if log:
            log.write(json.dumps(rec) + "\n")
    print(json.dumps({"peer": f"pytorch {torch.__version__} eager", "final_val_loss": rec["val_loss"], "train_loss": rec["train_loss"],
                      "seconds": time.perf_counter() - t_start}))


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["bench", "train"])
    ap.add_argument("--preset", default="baby", choices=[*PRESETS, "llama-baby"])
    ap.add_argument("--batch-size", type=int, default=12)
    ap.add_argument("--seq-len", type=int)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--vocab", type=int)
    ap.add_argument("--dtype", choices=["f32", "bf16"], default="f32", help="bench: bf16 autocast for the forward pass")
    ap.add_argument("--data")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--eval-every", type=int, default=250)
    ap.add_argument("--eval-batches", type=int, default=20)
    ap.add_argument("--seed", type=int, default=1337)
    ap.add_argument("--metrics")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    bench(a) if a.mode == "bench" else train(a)
