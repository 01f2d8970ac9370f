"""Greedy generation in attn against transformers' `generate()` on folders
that transformers 5 saves: the Llama the One-Transformer issue names (3
layers, 6 query heads sharing 2 KV heads, head_dim 48, rope_theta 5e5,
separate lm_head), a Llama 3.2-style model with llama3 rope scaling, Qwen2
with QKV biases, and GPT-2. Each gets a byte-level BPE that attn trains, a
real prompt of 210 tokens, and 60 new tokens. The generated ids must
be identical; then an end-of-sequence id is set to a token transformers
generates, in generation_config.json, and both must stop at it.

  cargo build --release && scripts/fetch_shakespeare.sh && tools/reference/setup.sh 5
  .cache/venv-ref5/bin/python tools/reference/check_generate.py
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
V = 512
tok_path = os.path.join(tmp, "tokenizer.json")
subprocess.run([ATTN, "tokenizer", "train", "--data", corpus, "--vocab-size", str(V), "--special", "<|endoftext|>", "--out", tok_path],
               check=True, capture_output=True)
hf_tok = Tokenizer.from_file(tok_path)
torch.manual_seed(0)
models = {
    "llama_gqa_hd48": LlamaForCausalLM(LlamaConfig(vocab_size=V, hidden_size=96, intermediate_size=160, num_hidden_layers=3,
                                                   num_attention_heads=6, num_key_value_heads=2, head_dim=48, max_position_embeddings=512,
                                                   rope_theta=500000.0, tie_word_embeddings=False, bos_token_id=None, eos_token_id=None)),
    "llama3_scaled": LlamaForCausalLM(LlamaConfig(vocab_size=V, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                                                  tie_word_embeddings=True, bos_token_id=None, eos_token_id=None,
                                                  rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0,
                                                                   "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                                                   "original_max_position_embeddings": 64})),
    "qwen2": Qwen2ForCausalLM(Qwen2Config(vocab_size=V, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                                          num_key_value_heads=1, max_position_embeddings=512, tie_word_embeddings=False,
                                          bos_token_id=None, eos_token_id=None)),
    "gpt2": GPT2LMHeadModel(GPT2Config(vocab_size=V, n_positions=512, n_embd=64, n_layer=2, n_head=4, bos_token_id=None, eos_token_id=None)),
}
prompt = text[500_000:500_400]
ids = hf_tok.encode(prompt).ids
failures = []
for name, model in models.items():
    model = model.float().eval()
    with torch.no_grad():
        for p in model.parameters():  # sharper than the init, so greedy choices are far apart
            p.mul_(3.0)
    d = os.path.join(tmp, name)
    model.save_pretrained(d, safe_serialization=True)
    subprocess.run(["cp", tok_path, d], check=True)
    for f in ("generation_config.json",):
        if os.path.exists(os.path.join(d, f)):
            os.remove(os.path.join(d, f))
    with torch.no_grad():
        out = model.generate(torch.tensor([ids]), max_new_tokens=60, do_sample=False, eos_token_id=None, pad_token_id=0)[0, len(ids):].tolist()
    run = lambda: json.loads(subprocess.run([ATTN, "generate", "--model", d, "--prompt", prompt, "--max-new-tokens", "60", "--temperature", "0",
                                             "--json"], check=True, capture_output=True, text=True).stdout)
    a = run()
    same = a["tokens"] == out
    # Stop at an end-of-sequence id from generation_config.json: the 30th token.
    eos = out[29]
    stop_at = out.index(eos)
    json.dump({"eos_token_id": eos}, open(os.path.join(d, "generation_config.json"), "w"))
    b = run()
    stopped = b["tokens"] == out[:stop_at] and b["finish_reason"] == "stop"
    print(json.dumps({"model": name, "prompt_tokens": len(ids), "identical_60": same, "first_difference": next((i for i, (x, y) in enumerate(zip(a["tokens"], out)) if x != y), None),
                      "eos_stop": stopped, "stopped_after": len(b["tokens"])}))
    if not (same and stopped):
        failures.append(name)
assert not failures, failures
print("ok: attn's greedy generation equals transformers' generate() and stops at the same EOS")
