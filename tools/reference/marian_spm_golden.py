"""Writes the SentencePiece / Marian tokenizer fixtures:

testdata/marian_spm/: a tokenizer folder in the layout of a Helsinki-NLP
Marian model on the Hub (source.spm, target.spm, vocab.json,
tokenizer_config.json; no tokenizer.json). The two .spm files are unigram
SentencePiece models trained by PyPI `sentencepiece` on the English and the
Spanish side of the Bible pairs (scripts/fetch_bible_pairs.sh), with
SentencePiece's default nmt_nfkc normalization; vocab.json is the joint
vocabulary Marian folders carry (</s> 0, <unk> 1, the pieces of both models,
<pad> last).

The folder also holds a small random MarianMTModel (config.json,
model.safetensors) over that vocabulary, so it is a whole Hub-style Marian
folder attn translates with; marian_spm_ids.json's "generate" records
transformers' greedy and beam-3 generate() on two sources and the texts
MarianTokenizer decodes from them.

testdata/marian_spm_ids.json: texts, the pieces `sentencepiece` cuts them
into, the ids MarianTokenizer (transformers) gives them as sources and as
targets, and what it decodes back, for crates/tokenizer/tests/sentencepiece.rs.

"separate" holds the same for a separate_vocabs folder
(testdata/marian_spm_separate: vocab.json of the source model's pieces,
target_vocab.json of the target model's).

Run after tools/reference/setup.sh 5 and scripts/fetch_bible_pairs.sh:
  .cache/venv-ref5/bin/python tools/reference/marian_spm_golden.py
"""
import io
import json
import os
import shutil
import tempfile

import sentencepiece as spm
import torch
import transformers
from transformers import MarianConfig, MarianMTModel, MarianTokenizer

out = "testdata/marian_spm"
os.makedirs(out, exist_ok=True)
pairs = [l.rstrip("\n").split("\t") for l in open(".cache/data/bible-pairs/train.tsv", encoding="utf-8")][:12000]
models = {}
# The source model normalizes with nmt_nfkc (its rules travel in the file as a
# 240 KB precompiled character map); the target model with "identity", which
# keeps the fixture small and tests the path without a map.
for side, name, col, rule in [("source", "source.spm", 0, "nmt_nfkc"), ("target", "target.spm", 1, "identity")]:
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(p[col] for p in pairs), model_writer=buf, vocab_size=600,
                                   model_type="unigram", character_coverage=0.995, unk_id=1, bos_id=-1, eos_id=0,
                                   pad_id=-1, normalization_rule_name=rule, minloglevel=2)
    open(os.path.join(out, name), "wb").write(buf.getvalue())
    models[side] = spm.SentencePieceProcessor(model_proto=buf.getvalue())

vocab = {"</s>": 0, "<unk>": 1}
for m in models.values():
    for i in range(m.get_piece_size()):
        p = m.id_to_piece(i)
        if p not in vocab and not m.is_control(i) and not m.is_unknown(i):
            vocab[p] = len(vocab)
vocab[">>es<<"] = len(vocab)
vocab["<pad>"] = len(vocab)
json.dump(vocab, open(os.path.join(out, "vocab.json"), "w", encoding="utf-8"), ensure_ascii=False, indent=1)
json.dump({"source_lang": "en", "target_lang": "es", "separate_vocabs": False, "model_max_length": 512,
           "tokenizer_class": "MarianTokenizer"}, open(os.path.join(out, "tokenizer_config.json"), "w"), indent=1)

tok = MarianTokenizer.from_pretrained(out)
samples = [
    "In the beginning, God created the heavens and the earth.",
    "Y la tierra estaba desordenada y vacía, y las tinieblas estaban sobre la haz del abismo.",
    "  two leading spaces and   runs   of spaces, trailing too   ",
    "Unknown characters: 日本語, emoji 🎉, math ∑∫, Ωmega",
    "Full-width ＡＢＣ １２３, ligature ﬁne, circled ① , non-breaking\u00a0space, ellipsis… and ½",
    "Lines\nwith\nnewlines\tand tabs",
    ">>es<< The LORD is my shepherd: I shall not want.",
    "an end marker </s> inside and <unk> too",
    "¿Quién es éste? ¡Jehová de los ejércitos! Él es el Rey de la gloria.",
    "",
    " ",
    "ŉ Ǆ ﬀ ㎏ ™ ℃ Ⅻ",
]
cases = []
for s in samples:
    src = tok(s)["input_ids"]
    tgt = tok(text_target=s)["input_ids"]
    cases.append({
        "text": s,
        "source_pieces": models["source"].encode(s, out_type=str),
        "target_pieces": models["target"].encode(s, out_type=str),
        "source_ids": src,
        "target_ids": tgt,
        "decoded": tok.decode(tgt, skip_special_tokens=True),
        "decoded_specials": tok.decode(tgt),
    })
torch.manual_seed(7)
cfg = MarianConfig(vocab_size=len(vocab), d_model=24, encoder_layers=2, decoder_layers=2, encoder_attention_heads=2,
                   decoder_attention_heads=2, encoder_ffn_dim=40, decoder_ffn_dim=40, max_position_embeddings=64,
                   activation_function="swish", scale_embedding=True, pad_token_id=vocab["<pad>"], eos_token_id=0,
                   decoder_start_token_id=vocab["<pad>"], forced_eos_token_id=0, dropout=0.0, attention_dropout=0.0,
                   activation_dropout=0.0, init_std=0.7, attn_implementation="eager")
model = MarianMTModel(cfg).eval()
model.save_pretrained(out)
generate = []
sources = ["In the beginning, God created the heavens and the earth.", "The LORD is my shepherd: I shall not want."]
for beam in (1, 3):
    batch = tok(sources, return_tensors="pt", padding=True)
    with torch.no_grad():
        gen = model.generate(**batch, num_beams=beam, max_new_tokens=12, do_sample=False)
    for s, row in zip(sources, gen.tolist()):
        row = [i for i in row[1:] if i != cfg.pad_token_id]  # the decoder start, and padding after an early EOS
        if row and row[-1] == cfg.eos_token_id:
            row = row[:-1]
        generate.append({"source": s, "beam": beam, "ids": row, "text": tok.decode(row)})
print(generate)

# A separate_vocabs folder (as multilingual Marian models ship): vocab.json
# holds the source model's pieces, target_vocab.json the target model's.
# Only the JSON files are committed (testdata/marian_spm_separate/); the test
# copies the .spm files in from testdata/marian_spm.
sep = "testdata/marian_spm_separate"
os.makedirs(sep, exist_ok=True)
for name, m in [("vocab.json", models["source"]), ("target_vocab.json", models["target"])]:
    v = {"</s>": 0, "<unk>": 1}
    for i in range(m.get_piece_size()):
        p = m.id_to_piece(i)
        if p not in v and not m.is_control(i) and not m.is_unknown(i):
            v[p] = len(v)
    v["<pad>"] = len(v)
    json.dump(v, open(os.path.join(sep, name), "w", encoding="utf-8"), ensure_ascii=False, indent=1)
json.dump({"source_lang": "en", "target_lang": "es", "separate_vocabs": True, "tokenizer_class": "MarianTokenizer"},
          open(os.path.join(sep, "tokenizer_config.json"), "w"), indent=1)
tmp = tempfile.mkdtemp()
for f in os.listdir(sep):
    shutil.copy(os.path.join(sep, f), tmp)
for f in ("source.spm", "target.spm"):
    shutil.copy(os.path.join(out, f), tmp)
stok = MarianTokenizer.from_pretrained(tmp)
separate = []
for s in samples:
    tgt = stok(text_target=s)["input_ids"]
    separate.append({"text": s, "source_ids": stok(s)["input_ids"], "target_ids": tgt,
                     "decoded": stok.decode(tgt, skip_special_tokens=True), "decoded_specials": stok.decode(tgt)})
json.dump({"transformers": transformers.__version__, "sentencepiece": spm.__version__, "cases": cases, "generate": generate, "separate": separate},
          open("testdata/marian_spm_ids.json", "w", encoding="utf-8"), ensure_ascii=False, indent=1)
for c in cases[:3] + cases[3:5]:
    print(c["text"][:40], c["source_pieces"][:8], c["source_ids"][:8], repr(c["decoded"][:50]))
print({f: os.path.getsize(os.path.join(out, f)) for f in os.listdir(out)})
