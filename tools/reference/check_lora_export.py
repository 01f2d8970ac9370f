"""Checks that PEFT loads the adapters attn writes: for testdata/lora/attn_export/{gpt2,llama}
(written by `ATTN_WRITE_FIXTURES=1 cargo test -p attn-model --test lora exported`),
PeftModel.from_pretrained on the base model (testdata/lora/{v}/base) must give the
logits attn computed (attn_logits.safetensors) within 1e-4.

Run: tools/reference/setup.sh 5 && .cache/venv-ref5/bin/python tools/reference/check_lora_export.py
"""
import sys

import torch
from peft import PeftModel
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

worst = 0.0
for v in ["gpt2", "llama"]:
    base = AutoModelForCausalLM.from_pretrained(f"testdata/lora/{v}/base", attn_implementation="eager").float()
    model = PeftModel.from_pretrained(base, f"testdata/lora/attn_export/{v}").eval()
    ref = load_file(f"testdata/lora/attn_export/{v}/attn_logits.safetensors")
    with torch.no_grad():
        logits = model(input_ids=ref["input_ids"].long()).logits
    d = (logits - ref["logits"]).abs().max().item()
    n = sum(p.numel() for n, p in model.named_parameters() if "lora_" in n)
    print(f"{v}: PEFT loaded {n} adapter weights; logits differ from attn's by {d:.2e}")
    worst = max(worst, d)
sys.exit(0 if worst < 1e-4 else 1)
