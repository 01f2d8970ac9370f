"""The attn -> transformers direction for translation models: trains a
transformer-tiny model with attn for a few steps on synthetic pairs, loads the
run folder with MarianMTModel.from_pretrained, and writes the folder
(config.json, model.safetensors, tokenizer.json) and transformers' logits on a
padded batch to testdata/seq2seq/attn_marian/. attn's test loads the same
folder and must give the same logits (1e-4), so a folder attn writes is one
transformers reads with the same numbers.

Run (after `cargo build --release`):
  .cache/venv-ref5/bin/python tools/reference/marian_export_golden.py
"""
import json
import os
import shutil
import subprocess
import tempfile

import torch
from safetensors.torch import save_file
from transformers import MarianMTModel

words_en = ["the", "water", "light", "house", "king", "bread", "land", "day", "night", "man"]
words_es = ["el", "agua", "luz", "casa", "rey", "pan", "tierra", "día", "noche", "hombre"]
tmp = tempfile.mkdtemp()
pairs = os.path.join(tmp, "pairs.tsv")
with open(pairs, "w") as f:
    for i in range(300):
        idx = [(i * 7 + k * 3) % 10 for k in range(1 + i % 5)]
        f.write(" ".join(words_en[j] for j in idx) + "\t" + " ".join(words_es[j] for j in idx) + "\n")
run = os.path.join(tmp, "run")
subprocess.run(["target/release/attn", "train", "--task", "translation", "--data", pairs, "--preset", "transformer-tiny",
                "--tokenizer", "bpe:300", "--out", run, "--steps", "20", "--eval-every", "20", "--batch-tokens", "512",
                "--lr", "3e-3", "--warmup", "5", "--quiet"], check=True)
model = MarianMTModel.from_pretrained(run).eval()
tok = json.load(open(os.path.join(run, "tokenizer.json")))
# A padded batch of two pairs, ids straight from the run's tokenizer file via attn.
def ids(text):
    out = subprocess.run(["target/release/attn", "tokenizer", "encode", "--tokenizer", os.path.join(run, "tokenizer.json"), text],
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out)["ids"] if out.strip().startswith("{") else [int(x) for x in out.split()]
cfg = model.config
src = [ids("the king and the bread of the land"), ids("light")]
tgt = [ids("el rey y el pan de la tierra"), ids("luz")]
S, T = max(map(len, src)), max(map(len, tgt))
src_ids = torch.full((2, S), cfg.pad_token_id)
labels = torch.full((2, T), -100)
for i in range(2):
    src_ids[i, : len(src[i])] = torch.tensor(src[i])
    labels[i, : len(tgt[i])] = torch.tensor(tgt[i])
mask = (src_ids != cfg.pad_token_id).long()
with torch.no_grad():
    out = model(input_ids=src_ids, attention_mask=mask, labels=labels)
dst = "testdata/seq2seq/attn_marian"
shutil.rmtree(dst, ignore_errors=True)
os.makedirs(dst)
for f in ["config.json", "model.safetensors", "tokenizer.json"]:
    shutil.copy(os.path.join(run, f), dst)
save_file({"src": src_ids.int(), "src_len": mask.sum(1).int(), "labels": labels.int(), "logits": out.logits.contiguous(),
           "loss": out.loss.reshape(1)}, f"{dst}/hf_logits.safetensors")
print("loss", out.loss.item(), "src", src, "tgt", tgt)
shutil.rmtree(tmp)
