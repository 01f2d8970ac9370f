"""The PyTorch peer of an attn translation run: torch.nn.TransformerEncoder /
TransformerDecoder layers (post-norm, ReLU, no dropout) of the run's shapes,
with the same shared embedding scaled by sqrt(d_model), the same sinusoidal
positions, the same tied output head, and the same recipe: AdamW (betas,
eps 1e-9, weight decay on matrices only), warmup + cosine learning rate,
global-norm clipping, label smoothing, and the very micro-batches the attn run
trained on (its --export-plan file). Reports the validation loss (plain
cross-entropy per target token, EOS included) and seconds per step, and
saves the trained weights as a Marian (or mBART) folder, so `attn eval` scores both
models' translations with the same beam search and metrics.

  python tools/bench/translation_peer.py RUN_DIR PLAN.json OUT_DIR --threads 2

With --save-init DIR it writes its freshly initialised weights (seeded by
--seed) as a folder of RUN_DIR's kind (Marian or mBART) with RUN_DIR's tokenizer and exits: `attn train
--init DIR` and this script's --init DIR then start from the very same
weights, so the two runs differ only in their arithmetic.
"""
import argparse
import json
import math
import os
import shutil
import time

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import save_file, safe_open

ap = argparse.ArgumentParser()
ap.add_argument("run")
ap.add_argument("plan", nargs="?")
ap.add_argument("out", nargs="?")
ap.add_argument("--init", help="start from this Marian folder's weights (one written by --save-init, or an attn run)")
ap.add_argument("--save-init", help="write the initial weights here as a Marian folder, then exit")
ap.add_argument("--threads", type=int, default=2)
ap.add_argument("--seed", type=int, default=0)
ap.add_argument("--metrics", help="write step, train_loss and (every eval_every steps) val_loss here, one JSON a line")
args = ap.parse_args()
torch.set_num_threads(args.threads)
torch.manual_seed(args.seed)
cfg = json.load(open(os.path.join(args.run, "config.json")))
C, V = cfg["d_model"], cfg["vocab_size"]


def name_map():
    """The peer's tensor names against Marian's: one-to-one pairs, and the
    attention blocks whose q, k, v nn.MultiheadAttention packs into one."""
    pairs, packed = [("shared", "model.shared.weight")], []
    for side, n in [("encoder", cfg["encoder_layers"]), ("decoder", cfg["decoder_layers"])]:
        attns = [("self_attn", "self_attn")] + ([("multihead_attn", "encoder_attn")] if side == "decoder" else [])
        norms = ["self_attn_layer_norm"] + (["encoder_attn_layer_norm"] if side == "decoder" else []) + ["final_layer_norm"]
        for i in range(n):
            p, q = f"{side}.layers.{i}.", f"model.{side}.layers.{i}."
            for mine, theirs in attns:
                packed.append((p + mine, q + theirs))
                pairs += [(p + f"{mine}.out_proj.{w}", q + f"{theirs}.out_proj.{w}") for w in ("weight", "bias")]
            named = [("linear1", "fc1"), ("linear2", "fc2")] + [(f"norm{j + 1}", nm) for j, nm in enumerate(norms)]
            pairs += [(p + f"{mine}.{w}", q + f"{theirs}.{w}") for mine, theirs in named for w in ("weight", "bias")]
        if cfg["model_type"] == "mbart":
            s = side[:3]
            pairs.append((f"{s}_pos", f"model.{side}.embed_positions.weight"))
            for mine, theirs in [(f"{s}_emb_norm", "layernorm_embedding"), (f"{side}.norm", "layer_norm")]:
                pairs += [(f"{mine}.{w}", f"model.{side}.{theirs}.{w}") for w in ("weight", "bias")]
    return pairs, packed


def to_marian(sd):
    """The peer's state dict under Marian's names."""
    pairs, packed = name_map()
    out = {theirs: sd[mine] for mine, theirs in pairs}
    out["final_logits_bias"] = torch.zeros(1, V)
    for mine, theirs in packed:
        for w in ("weight", "bias"):
            for j, x in enumerate("qkv"):
                out[f"{theirs}.{x}_proj.{w}"] = sd[f"{mine}.in_proj_{w}"][j * C : (j + 1) * C].contiguous()
    return out


def from_marian(t):
    """The inverse of to_marian: a Marian folder's tensors as the peer's state dict."""
    pairs, packed = name_map()
    sd = {mine: t[theirs] for mine, theirs in pairs}
    for mine, theirs in packed:
        for w in ("weight", "bias"):
            sd[f"{mine}.in_proj_{w}"] = torch.cat([t[f"{theirs}.{x}_proj.{w}"] for x in "qkv"])
    return sd


def save_folder(model, out):
    os.makedirs(out, exist_ok=True)
    for f in ["config.json", "tokenizer.json"]:
        shutil.copy(os.path.join(args.run, f), out)
    sd = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(to_marian(sd), os.path.join(out, "model.safetensors"), metadata={"format": "pt"})


from torch_seq2seq import Peer, make_batch

model = Peer(cfg)
if args.save_init:
    save_folder(model, args.save_init)
    print(f"wrote {args.save_init}")
    raise SystemExit(0)
if args.init:
    from safetensors.torch import load_file
    state = from_marian(load_file(os.path.join(args.init, "model.safetensors")))
    if not model.pre:  # Marian's sinusoidal table is fixed: a buffer, not in the folder
        state["pos"] = model.pos
    model.load_state_dict(state, strict=True)
assert args.plan and args.out, "PLAN and OUT are needed to train"
plan = json.load(open(args.plan))
if "train_config" in plan:
    tc = plan["train_config"]
else:  # a plan from before attn wrote the recipe into it
    with safe_open(os.path.join(args.run, "trainer_state.safetensors"), "pt") as f:
        tc = json.loads(f.metadata()["train_config"])
pad, start = plan["pad"], plan["start"]
assert cfg["activation_function"] == "relu" and cfg["scale_embedding"]

opt_kind = tc["optimizer"]
assert opt_kind["type"] == "adamw" and tc["decay_rule"] == "matrices"
# attn's "matrices" rule: embeddings (the shared table, learned positions) are not decayed.
embeddings = ("shared", "enc_pos", "dec_pos")
decay = [p for n, p in model.named_parameters() if p.dim() == 2 and n not in embeddings]
other = [p for n, p in model.named_parameters() if not (p.dim() == 2 and n not in embeddings)]
opt = torch.optim.AdamW([{"params": decay, "weight_decay": tc["weight_decay"]}, {"params": other, "weight_decay": 0.0}],
                        lr=tc["lr"], betas=(opt_kind["beta1"], opt_kind["beta2"]), eps=opt_kind["eps"])


def lr_at(step):
    w = max(tc["warmup"], 1)
    if tc["schedule"] == "Noam":
        return tc["lr"] * min(step / w, math.sqrt(w / max(step, 1)))
    if step <= tc["warmup"]:
        return tc["lr"] * step / w
    span = max(tc["steps"] - tc["warmup"], 1)
    prog = min((step - tc["warmup"]) / span, 1.0)
    return tc["min_lr"] + (tc["lr"] - tc["min_lr"]) * 0.5 * (1 + math.cos(math.pi * prog))


train = plan["train"]
val = plan["val"]
log = open(args.metrics, "w") if args.metrics else None


def val_loss():
    model.eval()
    nats, toks = 0.0, 0
    with torch.no_grad():
        order = sorted(range(len(val)), key=lambda i: max(len(val[i][0]), len(val[i][1])))
        for k in range(0, len(order), 64):
            src, src_pad, tgt_in, labels = make_batch(val, order[k : k + 64], pad, start)
            logits = model(src, src_pad, tgt_in)
            nats += F.cross_entropy(logits.reshape(-1, V), labels.reshape(-1), ignore_index=-100, reduction="sum").item()
            toks += (labels != -100).sum().item()
    model.train()
    return nats / toks, toks


accum = plan["grad_accum"]
micro = plan["micro_batches"]
steps = len(micro) // accum
times = []
for step in range(1, steps + 1):
    t0 = time.perf_counter()
    for g in opt.param_groups:
        g["lr"] = lr_at(step)
    opt.zero_grad(set_to_none=True)
    total = 0.0
    for m in range(accum):
        src, src_pad, tgt_in, labels = make_batch(train, micro[(step - 1) * accum + m], pad, start)
        logits = model(src, src_pad, tgt_in)
        loss = F.cross_entropy(logits.reshape(-1, V), labels.reshape(-1), ignore_index=-100, label_smoothing=tc["label_smoothing"])
        (loss / accum).backward()
        total += loss.item() / accum
    if tc["grad_clip"] > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), tc["grad_clip"])
    opt.step()
    times.append(time.perf_counter() - t0)
    rec = {"step": step, "train_loss": total}
    if log and (step % tc["eval_every"] == 0 or step == steps):
        rec["val_loss"] = val_loss()[0]
    if log:
        log.write(json.dumps(rec) + "\n")
        log.flush()
    if step % 50 == 0 or step == steps:
        print(f"peer step {step} loss {total:.4f} {times[-1]:.2f} s/step", flush=True)

final_val, toks = val_loss()

save_folder(model, args.out)
times.sort()
print(json.dumps({"peer_val_loss": final_val, "val_tokens": toks, "steps": steps, "median_s_per_step": times[len(times) // 2],
                  "torch": torch.__version__, "threads": torch.get_num_threads()}))
