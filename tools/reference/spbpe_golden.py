"""Writes the Llama-2-style tokenizer fixtures:

testdata/spbpe_tokenizer.json: a SentencePiece-style BPE tokenizer in the
layout of Llama 2 / TinyLlama's tokenizer.json (spaces become "▁", one "▁" is
prepended, unknown characters fall back to <0xXX> byte tokens, the
post-processor adds <s>), with a 2000-token vocabulary trained by HF
`tokenizers` on 300 KB of the Shakespeare corpus.

testdata/spbpe_ids.json: the texts of a varied sample and the ids HF
`tokenizers` gives them, for crates/tokenizer/tests/spbpe.rs.

Run after tools/reference/setup.sh and scripts/fetch_shakespeare.sh:
  .cache/venv-ref/bin/python tools/reference/spbpe_golden.py
"""
import json
from tokenizers import Tokenizer, decoders, models, normalizers, processors, trainers

text = open(".cache/data/shakespeare.txt", encoding="utf-8").read()
tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)])
bytes_ = [f"<0x{b:02X}>" for b in range(256)]
trainer = trainers.BpeTrainer(vocab_size=2000, special_tokens=["<unk>", "<s>", "</s>"] + bytes_, show_progress=False,
                              limit_alphabet=120)
lines = [l for l in text[:300_000].split("\n")]
tok.train_from_iterator(lines, trainer)
tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", tok.token_to_id("<s>"))])
# The trainer registers the byte tokens as added special tokens; in Llama 2's
# file they are ordinary vocabulary entries (so decoding keeps them), and
# only <unk>, <s> and </s> are added tokens.
j = json.loads(tok.to_str())
j["added_tokens"] = [t for t in j["added_tokens"] if t["content"] in ("<unk>", "<s>", "</s>")]
tok = Tokenizer.from_str(json.dumps(j))
tok.save("testdata/spbpe_tokenizer.json")

samples = [
    "To be, or not to be: that is the question.",
    "  two leading spaces and   runs   of spaces",
    "Unknown characters: 日本語, emoji 🎉, accents café, math ∑∫",
    "Lines\nwith\nnewlines\tand tabs",
    "<s> a special token in the text </s>",
    "",
    "x",
    text[500_000:502_000],
]
ids = [tok.encode(s).ids for s in samples]
json.dump({"texts": samples, "ids": ids, "decoded": [tok.decode(i) for i in ids]}, open("testdata/spbpe_ids.json", "w", encoding="utf-8"), ensure_ascii=False)
print("wrote testdata/spbpe_tokenizer.json and testdata/spbpe_ids.json;", [len(i) for i in ids])
