"""Checks that transformers loads the classifier folders attn writes: for
testdata/classify/attn_export/{gpt2,bert} (written by
`ATTN_WRITE_FIXTURES=1 cargo test -p attn-model --test classify exported`),
AutoModelForSequenceClassification must give the logits attn computed
(attn_logits.safetensors, a right-padded batch with its lengths) within 1e-4.

Run: tools/reference/setup.sh 5 && .cache/venv-ref5/bin/python tools/reference/check_classify_export.py
"""
import sys

import torch
from safetensors.torch import load_file
from transformers import AutoModelForSequenceClassification

worst = 0.0
for v in ["gpt2", "bert"]:
    path = f"testdata/classify/attn_export/{v}"
    model = AutoModelForSequenceClassification.from_pretrained(path, attn_implementation="eager").eval()
    ref = load_file(f"{path}/attn_logits.safetensors")
    ids, lens = ref["input_ids"].long(), ref["lens"].long()
    mask = (torch.arange(ids.shape[1])[None, :] < lens[:, None]).long()
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask).logits
    d = (logits - ref["logits"]).abs().max().item()
    print(f"{v}: {type(model).__name__} with labels {model.config.id2label}; logits differ from attn's by {d:.2e}")
    worst = max(worst, d)
sys.exit(0 if worst < 1e-4 else 1)
