"""Writes testdata/bpe_template_tokenizer.json and testdata/bpe_template_ids.json:
a byte-level BPE tokenizer.json in the layout of Llama 3 and Qwen2 (a Split
regex then ByteLevel; an NFC normalizer as Qwen2 has; a TemplateProcessing
post-processor that adds <|begin_of_text|> as Llama 3's does), and the ids HF
tokenizers gives for texts that exercise both.

The vocabulary is a 400-token one that attn trains on the first 100 KB of the
Shakespeare corpus (cl100k pattern), so the script needs `cargo build
--release` and scripts/fetch_shakespeare.sh:
  .cache/venv-ref/bin/python tools/reference/bpe_template_golden.py
"""
import json, subprocess, tempfile, os
from tokenizers import Tokenizer

tmp = tempfile.mkdtemp()
corpus = os.path.join(tmp, "c.txt")
open(corpus, "w", encoding="utf-8").write(open(".cache/data/shakespeare.txt", encoding="utf-8").read()[:100_000])
base = os.path.join(tmp, "t.json")
subprocess.run(["target/release/attn", "tokenizer", "train", "--data", corpus, "--vocab-size", "400", "--pattern", "cl100k",
                "--special", "<|begin_of_text|>", "--special", "<|end_of_text|>", "--out", base], check=True, capture_output=True)
j = json.load(open(base, encoding="utf-8"))
bos = next(t["id"] for t in j["added_tokens"] if t["content"] == "<|begin_of_text|>")
j["normalizer"] = {"type": "NFC"}
j["post_processor"] = {"type": "Sequence", "processors": [
    {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False, "use_regex": True},
    {"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
     "pair": [{"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
              {"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
     "special_tokens": {"<|begin_of_text|>": {"id": "<|begin_of_text|>", "ids": [bos], "tokens": ["<|begin_of_text|>"]}}}]}
tok = Tokenizer.from_str(json.dumps(j))
tok.save("testdata/bpe_template_tokenizer.json")
texts = ["To be, or not to be.", "cafe\u0301 and café are one text after NFC", "<|end_of_text|> inside", ""]
json.dump({"texts": texts, "ids": [tok.encode(t).ids for t in texts]}, open("testdata/bpe_template_ids.json", "w", encoding="utf-8"), ensure_ascii=False)
print("wrote testdata/bpe_template_tokenizer.json and testdata/bpe_template_ids.json", [tok.encode(t).ids[:6] for t in texts])
