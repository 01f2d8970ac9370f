"""Writes testdata/marian_spm_attention.json: the attention probabilities
transformers' MarianMTModel gives (output_attentions=True, eager attention)
for one source and its target read teacher-forced, with the Hub-style
Marian folder testdata/marian_spm (tokenized by MarianTokenizer):
"encoder" (layers, heads, S, S), "decoder" (layers, heads, T, T) and
"cross" (layers, heads, T, S), beside the ids. crates/cli/tests/translate_cli.rs
checks `attn inspect attention --kind encoder|decoder|cross --out FILE.json`
against them.

Run after marian_spm_golden.py: .cache/venv-ref5/bin/python tools/reference/seq2seq_attention_golden.py
"""
import json

import torch
from transformers import MarianMTModel, MarianTokenizer

FOLDER = "testdata/marian_spm"
SOURCE = "In the beginning, God created the heavens and the earth."
TARGET = "En el principio creó Dios los cielos y la tierra."

tok = MarianTokenizer.from_pretrained(FOLDER)
model = MarianMTModel.from_pretrained(FOLDER, attn_implementation="eager").eval()
batch = tok([SOURCE], text_target=[TARGET], return_tensors="pt")
labels = batch["labels"]
start = model.config.decoder_start_token_id
dec_in = torch.cat([torch.tensor([[start]]), labels[:, :-1]], dim=1)
with torch.no_grad():
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], decoder_input_ids=dec_in,
                output_attentions=True)
# (heads, rows, cols) per layer, batch of one; 8 decimals (the test allows 1e-5).
as_list = lambda maps: [[[[round(p, 8) for p in row] for row in head] for head in m[0].tolist()] for m in maps]
json.dump({
    "transformers": __import__("transformers").__version__,
    "source": SOURCE, "target": TARGET,
    "source_ids": batch["input_ids"][0].tolist(), "target_ids": labels[0].tolist(), "decoder_input_ids": dec_in[0].tolist(),
    "encoder": as_list(out.encoder_attentions), "decoder": as_list(out.decoder_attentions), "cross": as_list(out.cross_attentions),
}, open("testdata/marian_spm_attention.json", "w"))
print("source ids", batch["input_ids"][0].tolist(), "target ids", labels[0].tolist())
