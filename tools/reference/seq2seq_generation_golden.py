"""Writes testdata/seq2seq/generation.json: what transformers' generate()
produces when a model folder's own generation settings drive it (no
arguments besides the inputs), for the random-init Marian and BART folders
of seq2seq_golden.py and the same padded batch of two sources.

Each case names a folder, where its settings live (generation_config.json,
or config.json's legacy keys when a folder has no generation_config.json,
as transformers 4.x folders often do) and the settings, which mirror real
checkpoints: bart-large-cnn's (forced BOS, no_repeat_ngram_size 3,
min_length, length_penalty 2, early_stopping true), opus-mt's (bad_words_ids
= [[pad]], num_beams, max_length), and the corners where the rules meet (a
min_length past the length limit, where the forced EOS wins; a two-token
bad word; early_stopping "never"; renormalize_logits; the repetition penalty
in greedy and beam search; the source's n-grams refused; suppress_tokens and
begin_suppress_tokens, the latter after a forced BOS). The test copies a folder, writes the
settings where the case says, runs `attn`'s search with the settings read
from the folder and compares token for token.

Run after seq2seq_golden.py: .cache/venv-ref5/bin/python tools/reference/seq2seq_generation_golden.py
"""
import json
import os
import shutil
import tempfile

import torch
from safetensors.torch import load_file
from transformers import BartForConditionalGeneration, MarianMTModel

SEQ = "testdata/seq2seq"
CLASSES = {"marian": MarianMTModel, "bart": BartForConditionalGeneration}
CASES = [
    ("bart-cnn-like", "bart", "generation_config.json",
     {"num_beams": 4, "length_penalty": 2.0, "early_stopping": True, "no_repeat_ngram_size": 3, "min_length": 12,
      "max_length": 30, "forced_bos_token_id": 0, "forced_eos_token_id": 2, "decoder_start_token_id": 2,
      "bos_token_id": 0, "eos_token_id": 2, "pad_token_id": 1}),
    ("bart-greedy-rules", "bart", "generation_config.json",
     {"no_repeat_ngram_size": 2, "min_new_tokens": 8, "max_new_tokens": 20, "bad_words_ids": [[5], [23, 23], [9, 9]],
      "decoder_start_token_id": 2, "eos_token_id": 2, "pad_token_id": 1}),
    # No forced_eos_token_id in the file: transformers then forces none, even
    # though config.json names one.
    ("bart-no-forced-eos", "bart", "generation_config.json",
     {"num_beams": 3, "max_new_tokens": 16, "decoder_start_token_id": 2, "eos_token_id": 2, "pad_token_id": 1}),
    ("marian-opus-like", "marian", "config.json",
     {"num_beams": 3, "max_length": 25, "bad_words_ids": [[60], [53, 53]], "length_penalty": 0.6}),
    ("marian-min-past-limit", "marian", "generation_config.json",
     {"num_beams": 2, "min_length": 40, "max_new_tokens": 18, "early_stopping": "never", "forced_eos_token_id": 0,
      "decoder_start_token_id": 60, "eos_token_id": 0, "pad_token_id": 60}),
    ("marian-greedy-ngram", "marian", "config.json",
     {"no_repeat_ngram_size": 1, "max_new_tokens": 24}),
    # The repetition penalty acts on logits in greedy search and on
    # log-probabilities in beam search: one case of each.
    ("marian-greedy-penalty", "marian", "generation_config.json",
     {"repetition_penalty": 1.5, "max_new_tokens": 20, "forced_eos_token_id": 0, "decoder_start_token_id": 60,
      "eos_token_id": 0, "pad_token_id": 60}),
    ("bart-beam-penalty", "bart", "config.json",
     {"num_beams": 3, "repetition_penalty": 1.3, "max_new_tokens": 20}),
    # No n-gram of the source (its padded row) in the output: single tokens
    # in beam search (the sources end in the EOS, so it is refused until the
    # forced one at the limit), bigrams in greedy search.
    ("marian-encoder-unigram", "marian", "generation_config.json",
     {"encoder_no_repeat_ngram_size": 1, "num_beams": 3, "max_new_tokens": 20, "forced_eos_token_id": 0,
      "decoder_start_token_id": 60, "eos_token_id": 0, "pad_token_id": 60}),
    ("bart-encoder-bigram", "bart", "config.json",
     {"encoder_no_repeat_ngram_size": 2, "max_new_tokens": 24}),
    # opus-mt's generation_config.json sets renormalize_logits: the scores are
    # log-softmaxed again after the bans, which reorders beams whose banned
    # mass differs (here the bans take the most likely tokens).
    ("marian-renormalize", "marian", "generation_config.json",
     {"num_beams": 4, "max_new_tokens": 20, "bad_words_ids": [[60], [18], [53]], "no_repeat_ngram_size": 2,
      "renormalize_logits": True, "forced_eos_token_id": 0, "decoder_start_token_id": 60, "eos_token_id": 0,
      "pad_token_id": 60}),
]

golden = load_file(f"{SEQ}/golden.safetensors")


def plain(folder, settings):
    """generate()'s rows (tokens after the start token) with `settings` alone."""
    cfg = json.load(open(f"{SEQ}/{folder}/config.json"))
    model = CLASSES[folder].from_pretrained(f"{SEQ}/{folder}").eval()
    src, lens = golden[f"{folder}.src"].long(), golden[f"{folder}.src_len"].long()
    mask = (torch.arange(src.shape[1])[None, :] < lens[:, None]).long()
    with torch.no_grad():
        return [r[1:] for r in model.generate(input_ids=src, attention_mask=mask, **settings).tolist()], cfg


# suppress_tokens and begin_suppress_tokens take the tokens these models
# would produce (so that the bans change the output): the most frequent
# greedy token, then each source's first token with that one suppressed
# (after a forced BOS, its second, where transformers' begin index moves).
greedy, cfg = plain("marian", {"max_new_tokens": 16})
counts = {}
for row in greedy:
    for t in row:
        if t not in (cfg["eos_token_id"], cfg["pad_token_id"]):
            counts[t] = counts.get(t, 0) + 1
top = sorted(counts, key=lambda t: (-counts[t], t))[:1]
greedy, _ = plain("marian", {"max_new_tokens": 16, "suppress_tokens": top})
CASES.append(("marian-suppress", "marian", "generation_config.json",
              {"max_new_tokens": 16, "suppress_tokens": top, "begin_suppress_tokens": sorted({r[0] for r in greedy}),
               "forced_eos_token_id": 0, "decoder_start_token_id": 60, "eos_token_id": 0, "pad_token_id": 60}))
beam, cfg = plain("bart", {"max_new_tokens": 16, "num_beams": 3, "forced_bos_token_id": 0})
CASES.append(("bart-begin-suppress-after-bos", "bart", "generation_config.json",
              {"num_beams": 3, "max_new_tokens": 16, "forced_bos_token_id": 0, "begin_suppress_tokens": sorted({r[1] for r in beam}),
               "decoder_start_token_id": 2, "eos_token_id": 2, "pad_token_id": 1}))
out = {"transformers": __import__("transformers").__version__, "torch": torch.__version__, "cases": []}
for name, folder, where, settings in CASES:
    with tempfile.TemporaryDirectory() as tmp:
        for f in os.listdir(f"{SEQ}/{folder}"):
            shutil.copy(f"{SEQ}/{folder}/{f}", tmp)
        if where == "config.json":
            cfg = json.load(open(f"{tmp}/config.json"))
            cfg.update(settings)
            json.dump(cfg, open(f"{tmp}/config.json", "w"), indent=2)
        else:
            json.dump(settings, open(f"{tmp}/generation_config.json", "w"), indent=2)
        model = CLASSES[folder].from_pretrained(tmp).eval()
        src = golden[f"{folder}.src"].long()
        lens = golden[f"{folder}.src_len"].long()
        mask = (torch.arange(src.shape[1])[None, :] < lens[:, None]).long()
        with torch.no_grad():
            gen = model.generate(input_ids=src, attention_mask=mask)
    pad, eos = model.config.pad_token_id, model.config.eos_token_id
    rows = []
    for row in gen.tolist():
        # The tokens after the start token, up to and including the first EOS.
        ids = row[1:]
        if eos in ids:
            ids = ids[: ids.index(eos) + 1]
        rows.append(ids)
    print(name, rows)
    out["cases"].append({"name": name, "folder": folder, "file": where, "settings": settings, "expect": rows})
json.dump(out, open(f"{SEQ}/generation.json", "w"), indent=1)
