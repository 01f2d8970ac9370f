"""An attn run folder is a Hugging Face model folder (GPT-2, or Llama for the
llama presets): this loads it with `AutoModelForCausalLM.from_pretrained` and
`tokenizers.Tokenizer.from_file`, and compares with attn:
  - the next-token logits after the first line of the text (the 200 most
    likely tokens, from `attn inspect next --json`), within 1e-4;
  - the loss over the whole text, scored the way `attn eval` does (windows of
    n_ctx + 1 tokens overlapping by one; one window of exactly the text's
    tokens when it fits, i.e. labels=input_ids), within 1e-4, and the ids.

  .cache/venv-ref/bin/python tools/reference/check_hf_roundtrip.py RUN_DIR TEXT_FILE
"""
import json, math, subprocess, sys

import torch
from tokenizers import Tokenizer
from transformers import AutoModelForCausalLM

run, text_file = sys.argv[1], sys.argv[2]
text = open(text_file, encoding="utf-8").read()
tok = Tokenizer.from_file(f"{run}/tokenizer.json")
ids = tok.encode(text).ids
assert tok.decode(ids) == text, "HF tokenizers does not round-trip the text"
model = AutoModelForCausalLM.from_pretrained(run).eval()
ctx = getattr(model.config, "n_positions", None) or model.config.max_position_embeddings
nats, start = 0.0, 0
with torch.no_grad():
    while start + 1 < len(ids):
        window = torch.tensor([ids[start:start + ctx + 1]])
        out = model(window[:, :-1], labels=None).logits
        nats += torch.nn.functional.cross_entropy(out[0], window[0, 1:], reduction="sum").item()
        start += window.shape[1] - 1
hf_loss = nats / (len(ids) - 1)
attn = json.loads(subprocess.run(["target/release/attn", "eval", "--model", run, "--data", text_file, "--json"],
                                 check=True, capture_output=True, text=True).stdout)
prompt = text.split("\n")[0][:200]
nxt = json.loads(subprocess.run(["target/release/attn", "inspect", "next", "--model", run, "--text", prompt, "--top", "200", "--json"],
                                check=True, capture_output=True, text=True).stdout)
with torch.no_grad():
    ref = model(torch.tensor([tok.encode(prompt).ids])).logits[0, -1]
logit_diff = max(abs(c["logit"] - ref[c["id"]].item()) for c in nxt["candidates"])
result = {"model_type": model.config.model_type, "tokens_attn": attn["tokens"], "tokens_hf": len(ids), "loss_attn": attn["loss"],
          "loss_transformers": hf_loss, "abs_diff": abs(attn["loss"] - hf_loss), "max_logit_diff": logit_diff}
print(json.dumps(result))
assert attn["tokens"] == len(ids), "token counts differ"
assert result["abs_diff"] < 1e-4, "losses differ by more than 1e-4"
assert logit_diff < 1e-4, "logits differ by more than 1e-4"
print("ok: transformers loads the attn checkpoint and agrees")
