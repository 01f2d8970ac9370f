"""The peer of attn's spam classifier: the same recipe in a plain PyTorch loop
over transformers' BertForSequenceClassification, from the same
all-MiniLM-L6-v2 folder, on the same files.

Recipe (attn's defaults for `attn train --task classify` as
tools/bench/spam_compare.sh runs it): texts cut to 128 tokens ([SEP] kept),
batches of 16 padded to their longest text, a seeded order per epoch, AdamW
(betas 0.9 / 0.99, eps 1e-8, weight decay on matrices only), global-norm clip
1.0, linear warmup then cosine decay to lr / 10 at the last step, no dropout
(attn has none). Prints one JSON line: accuracy and macro F1 on the test
file, the final loss, and the training time per epoch.

Usage: spam_peer.py MODEL_DIR TRAIN.jsonl TEST.jsonl [--epochs N] [--lr X] [--warmup N] [--threads N] [--seed S]
"""
import argparse
import json
import math
import time

import torch
from transformers import AutoTokenizer, BertForSequenceClassification

ap = argparse.ArgumentParser()
ap.add_argument("model")
ap.add_argument("train")
ap.add_argument("test")
ap.add_argument("--epochs", type=float, default=1.0)
ap.add_argument("--lr", type=float, default=5e-5)
ap.add_argument("--warmup", type=int, default=25)
ap.add_argument("--batch-size", type=int, default=16)
ap.add_argument("--seq-len", type=int, default=128)
ap.add_argument("--weight-decay", type=float, default=0.01)
ap.add_argument("--threads", type=int, default=2)
ap.add_argument("--seed", type=int, default=1337)
a = ap.parse_args()
torch.set_num_threads(a.threads)
torch.manual_seed(a.seed)

read = lambda p: [json.loads(l) for l in open(p, encoding="utf-8") if l.strip()]
train, test = read(a.train), read(a.test)
labels = sorted({r["label"] for r in train})
tok = AutoTokenizer.from_pretrained(a.model)
enc = lambda recs: [(tok(r["text"], truncation=True, max_length=a.seq_len)["input_ids"], labels.index(r["label"])) for r in recs]
train_ids, test_ids = enc(train), enc(test)
model = BertForSequenceClassification.from_pretrained(
    a.model, num_labels=len(labels), id2label=dict(enumerate(labels)), label2id={l: i for i, l in enumerate(labels)},
    hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, classifier_dropout=0.0, attn_implementation="eager")

decay = [p for n, p in model.named_parameters() if p.dim() >= 2 and "embeddings" not in n]
no_decay = [p for n, p in model.named_parameters() if not (p.dim() >= 2 and "embeddings" not in n)]
opt = torch.optim.AdamW([{"params": decay, "weight_decay": a.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
                        lr=a.lr, betas=(0.9, 0.99), eps=1e-8)
steps = max(1, math.ceil(a.epochs * len(train_ids) / a.batch_size))
def lr_at(step):  # 1-based, as attn's schedule
    if step <= a.warmup:
        return a.lr * step / max(1, a.warmup)
    progress = min(1.0, (step - a.warmup) / max(1, steps - a.warmup))
    return a.lr / 10 + (a.lr - a.lr / 10) * 0.5 * (1 + math.cos(math.pi * progress))

def batch(examples):
    t = max(len(e[0]) for e in examples)
    ids = torch.zeros(len(examples), t, dtype=torch.long)
    mask = torch.zeros(len(examples), t, dtype=torch.long)
    for i, (e, _) in enumerate(examples):
        ids[i, :len(e)] = torch.tensor(e)
        mask[i, :len(e)] = 1
    return ids, mask, torch.tensor([l for _, l in examples])

g = torch.Generator().manual_seed(a.seed)
order = []
model.train()
t0 = time.perf_counter()
loss = float("nan")
for step in range(1, steps + 1):
    while len(order) < a.batch_size:
        order += torch.randperm(len(train_ids), generator=g).tolist()
    picked, order = order[:a.batch_size], order[a.batch_size:]
    ids, mask, y = batch([train_ids[i] for i in picked])
    for grp in opt.param_groups:
        grp["lr"] = lr_at(step)
    opt.zero_grad()
    out = model(input_ids=ids, attention_mask=mask, labels=y)
    out.loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    loss = out.loss.item()
train_s = time.perf_counter() - t0

model.eval()
preds = []
with torch.no_grad():
    for i in range(0, len(test_ids), 32):
        ids, mask, _ = batch(test_ids[i:i + 32])
        preds += model(input_ids=ids, attention_mask=mask).logits.argmax(-1).tolist()
truth = [l for _, l in test_ids]
acc = sum(p == t for p, t in zip(preds, truth)) / len(truth)
f1s = []
for k in range(len(labels)):
    tp = sum(p == k and t == k for p, t in zip(preds, truth))
    pp, ap_ = sum(p == k for p in preds), sum(t == k for t in truth)
    f1s.append(0.0 if tp == 0 else 2 * (tp / pp) * (tp / ap_) / ((tp / pp) + (tp / ap_)))
print(json.dumps({"peer": f"torch {torch.__version__} eager", "steps": steps, "final_train_loss": loss, "accuracy": acc,
                  "macro_f1": sum(f1s) / len(f1s), "train_s": train_s, "s_per_epoch": train_s / a.epochs, "threads": a.threads}))
