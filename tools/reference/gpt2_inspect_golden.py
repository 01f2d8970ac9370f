"""Writes testdata/gpt2_inspect_golden.safetensors: the attention probabilities
and residual streams Hugging Face transformers reports (eager attention,
output_attentions=True, output_hidden_states=True) for the tiny GPT-2 in
testdata/gpt2_golden.safetensors, on the first sequence of its batch.

attn's test `crates/inspect/tests/golden.rs` compares `attn_inspect::trace`
with these. Run after tools/reference/setup.sh:
  .cache/venv-ref/bin/python tools/reference/gpt2_inspect_golden.py
"""
import json
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from transformers import GPT2Config, GPT2LMHeadModel

src = "testdata/gpt2_golden.safetensors"
with safe_open(src, "pt") as f:
    meta = f.metadata()
    params = {k[len("param."):]: f.get_tensor(k) for k in f.keys() if k.startswith("param.")}
    ids = f.get_tensor("input_ids")[0:1].long()
cfg = GPT2Config(**{k: v for k, v in json.loads(meta["config"]).items() if k not in ("transformers_version",)})
cfg._attn_implementation = "eager"
model = GPT2LMHeadModel(cfg).float().eval()
model.load_state_dict(params, strict=False)
with torch.no_grad():
    out = model(ids, output_attentions=True, output_hidden_states=True)
# hidden_states has n_layer + 1 entries, the last after the final LayerNorm;
# the first n_layer are the residual stream entering each block.
tensors = {
    "input_ids": ids[0].to(torch.int32),
    "attentions": torch.stack([a[0] for a in out.attentions]),  # (L, NH, T, T)
    "residual": torch.stack([h[0] for h in out.hidden_states[:-1]]),  # (L, T, C)
    "logits": out.logits[0],  # (T, V)
}
save_file({k: v.contiguous() for k, v in tensors.items()}, "testdata/gpt2_inspect_golden.safetensors",
          metadata={"torch": torch.__version__, "transformers": __import__("transformers").__version__, "source": src})
print("wrote testdata/gpt2_inspect_golden.safetensors", {k: tuple(v.shape) for k, v in tensors.items()})
