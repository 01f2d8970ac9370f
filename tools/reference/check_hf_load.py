"""Folders written by transformers' `save_pretrained` run in attn: for GPT-2,
Llama (grouped-query attention, tied embeddings) and Qwen2 (QKV bias, a
separate lm_head), a tiny random model is saved in shards of at most 200 KB
(so model.safetensors.index.json is used) with a byte-level BPE tokenizer
that attn trains; then `attn eval` and `attn inspect next` must agree with
transformers on the loss (1e-4) and the logits (1e-4).

  cargo build --release && scripts/fetch_shakespeare.sh && tools/reference/setup.sh
  .cache/venv-ref/bin/python tools/reference/check_hf_load.py
"""
import json, os, subprocess, tempfile
import torch
from tokenizers import Tokenizer
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

ATTN = "target/release/attn"
tmp = tempfile.mkdtemp()
corpus = os.path.join(tmp, "corpus.txt")
text = open(".cache/data/shakespeare.txt", encoding="utf-8").read()
open(corpus, "w", encoding="utf-8").write(text[:300_000])
sample = os.path.join(tmp, "sample.txt")
open(sample, "w", encoding="utf-8").write(text[400_000:401_500])
V = 512
tok_path = os.path.join(tmp, "tokenizer.json")
subprocess.run([ATTN, "tokenizer", "train", "--data", corpus, "--vocab-size", str(V), "--special", "<|endoftext|>", "--out", tok_path], check=True, capture_output=True)
common = dict(vocab_size=V, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=128)
models = {
    "gpt2": GPT2LMHeadModel(GPT2Config(vocab_size=V, n_positions=128, n_embd=64, n_layer=2, n_head=4)),
    "llama": LlamaForCausalLM(LlamaConfig(**common, num_key_value_heads=2, tie_word_embeddings=True, rope_theta=10000.0)),
    "qwen2": Qwen2ForCausalLM(Qwen2Config(**common, num_key_value_heads=1, tie_word_embeddings=False, rope_theta=1e6)),
}
torch.manual_seed(0)
results = []
for name, model in models.items():
    model = model.float().eval()
    d = os.path.join(tmp, name)
    model.save_pretrained(d, max_shard_size="200KB", safe_serialization=True)
    subprocess.run(["cp", tok_path, d], check=True)
    hf_tok = Tokenizer.from_file(tok_path)
    ids = hf_tok.encode(open(sample, encoding="utf-8").read()).ids[:128]
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0]
    hf_loss = torch.nn.functional.cross_entropy(logits[:-1], torch.tensor(ids[1:])).item()
    short = os.path.join(tmp, f"{name}.txt")
    open(short, "w", encoding="utf-8").write(hf_tok.decode(ids))
    ev = json.loads(subprocess.run([ATTN, "eval", "--model", d, "--data", short, "--json"], check=True, capture_output=True, text=True).stdout)
    prompt = hf_tok.decode(ids[:20])
    nxt = json.loads(subprocess.run([ATTN, "inspect", "next", "--model", d, "--text", prompt, "--top", "100", "--json"],
                                    check=True, capture_output=True, text=True).stdout)
    with torch.no_grad():
        ref = model(torch.tensor([hf_tok.encode(prompt).ids])).logits[0, -1]
    r = {"model": name, "shards": len([f for f in os.listdir(d) if f.endswith(".safetensors")]), "tokens": ev["tokens"],
         "loss_diff": abs(ev["loss"] - hf_loss), "max_logit_diff": max(abs(c["logit"] - ref[c["id"]].item()) for c in nxt["candidates"])}
    print(json.dumps(r))
    results.append(r)
assert all(r["loss_diff"] < 1e-4 and r["max_logit_diff"] < 1e-4 and r["shards"] > 1 for r in results)
print("ok: transformers' sharded folders run in attn with the same loss and logits")
