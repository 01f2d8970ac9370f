"""PyTorch side of the translation speed bars (tools/bench/translation_speed.sh).

  train     steps of the torch.nn peer (tools/bench/torch_seq2seq.py) of a
            translation preset on random full-length pairs: forward, backward,
            clip, AdamW (betas 0.9/0.98, eps 1e-9, no weight decay), label
            smoothing 0.1 -- the work `attn bench train --preset ...` times.
            --autocast runs the forward in bf16 autocast.
  make      a random MarianMTModel of transformer-base's shapes with a given
            tokenizer.json, its EOS logit pushed down so that every
            translation runs to the length limit on both sides.
  generate  transformers' generate() on that folder: beam search over the
            sources of --data in batches, the work `attn bench translate` times.
Each prints one JSON line.
"""
import argparse
import json
import math
import os
import shutil
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(__file__))
from torch_seq2seq import Peer  # noqa: E402

PRESETS = {
    "transformer-tiny": dict(layers=2, d=32, heads=4, ffn=64, ctx=128),
    "transformer-small": dict(layers=3, d=256, heads=4, ffn=1024, ctx=256),
    "transformer-base": dict(layers=6, d=512, heads=8, ffn=2048, ctx=512),
}


def marian_cfg(preset, vocab):
    p = PRESETS[preset]
    return dict(d_model=p["d"], vocab_size=vocab, encoder_attention_heads=p["heads"], decoder_attention_heads=p["heads"],
                encoder_layers=p["layers"], decoder_layers=p["layers"], encoder_ffn_dim=p["ffn"], decoder_ffn_dim=p["ffn"],
                max_position_embeddings=p["ctx"], pad_token_id=0)


ap = argparse.ArgumentParser()
ap.add_argument("mode", choices=["train", "make", "generate"])
ap.add_argument("--preset", default="transformer-base")
ap.add_argument("--batch-size", type=int, default=8)
ap.add_argument("--seq-len", type=int, default=64)
ap.add_argument("--vocab", type=int, default=8000)
ap.add_argument("--steps", type=int, default=10)
ap.add_argument("--threads", type=int, default=2)
ap.add_argument("--autocast", action="store_true")
ap.add_argument("--model")
ap.add_argument("--tokenizer")
ap.add_argument("--data")
ap.add_argument("--beam", type=int, default=4)
ap.add_argument("--max-new-tokens", type=int, default=64)
ap.add_argument("--rounds", type=int, default=3)
a = ap.parse_args()
torch.set_num_threads(a.threads)
torch.manual_seed(0)

if a.mode == "train":
    cfg = marian_cfg(a.preset, a.vocab)
    model = Peer(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.98), eps=1e-9, weight_decay=0.0)
    B, T, V = a.batch_size, a.seq_len, a.vocab
    src, tgt_in, labels = (torch.randint(2, V, (B, T)) for _ in range(3))
    src_pad = torch.zeros(B, T, dtype=torch.bool)
    times = []
    for i in range(a.steps + 2):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=a.autocast):
            logits = model(src, src_pad, tgt_in)
        loss = F.cross_entropy(logits.float().reshape(-1, V), labels.reshape(-1), label_smoothing=0.1)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if i >= 2:
            times.append(time.perf_counter() - t0)
    times.sort()
    med = times[len(times) // 2]
    print(json.dumps({"peer": "torch.nn " + ("bf16 autocast" if a.autocast else "eager f32"), "preset": a.preset, "batch_size": B,
                      "seq_len": T, "vocab": V, "threads": torch.get_num_threads(), "ms_per_step": med * 1e3,
                      "tok_per_s": 2 * B * T / med, "torch": torch.__version__}))
elif a.mode == "make":
    from transformers import MarianConfig, MarianMTModel
    tok = json.load(open(a.tokenizer))
    vocab = len(tok["model"]["vocab"]) + len(tok.get("added_tokens", []))
    ids = {t["content"]: t["id"] for t in tok["added_tokens"]}
    p = PRESETS[a.preset]
    cfg = MarianConfig(vocab_size=vocab, decoder_vocab_size=vocab, d_model=p["d"], encoder_layers=p["layers"], decoder_layers=p["layers"],
                       encoder_attention_heads=p["heads"], decoder_attention_heads=p["heads"], encoder_ffn_dim=p["ffn"],
                       decoder_ffn_dim=p["ffn"], activation_function="relu", max_position_embeddings=p["ctx"], scale_embedding=True,
                       pad_token_id=ids["<pad>"], eos_token_id=ids["</s>"], decoder_start_token_id=ids["<pad>"],
                       forced_eos_token_id=ids["</s>"], dropout=0.0, attention_dropout=0.0, activation_dropout=0.0)
    model = MarianMTModel(cfg).eval()
    with torch.no_grad():
        model.final_logits_bias[0, ids["</s>"]] = -1e4
    model.save_pretrained(a.model)
    if os.path.exists(os.path.join(a.model, "generation_config.json")):
        os.remove(os.path.join(a.model, "generation_config.json"))
    shutil.copy(a.tokenizer, os.path.join(a.model, "tokenizer.json"))
    print(json.dumps({"made": a.model, "vocab": vocab}))
else:
    from tokenizers import Tokenizer
    from transformers import MarianMTModel
    model = MarianMTModel.from_pretrained(a.model).eval()
    tok = Tokenizer.from_file(os.path.join(a.model, "tokenizer.json"))
    lines = [l.split("\t")[0] for l in open(a.data, encoding="utf-8") if l.strip()]
    pad = model.config.pad_token_id
    batches = []
    for k in range(0, len(lines), a.batch_size):
        enc = [e.ids for e in tok.encode_batch(lines[k : k + a.batch_size])]
        S = max(map(len, enc))
        ids = torch.full((len(enc), S), pad)
        for i, e in enumerate(enc):
            ids[i, : len(e)] = torch.tensor(e)
        batches.append((ids, (ids != pad).long()))

    def run():
        t0 = time.perf_counter()
        n = 0
        with torch.no_grad():
            for ids, mask in batches:
                out = model.generate(input_ids=ids, attention_mask=mask, num_beams=a.beam, max_new_tokens=a.max_new_tokens, do_sample=False)
                n += ((out[:, 1:] != pad).sum()).item()
        return time.perf_counter() - t0, n

    run()
    res = [run() for _ in range(a.rounds)]
    secs = sorted(r[0] for r in res)[len(res) // 2]
    print(json.dumps({"peer": "transformers generate()", "sources": len(lines), "beam": a.beam, "batch_size": a.batch_size,
                      "max_new_tokens": a.max_new_tokens, "generated_tokens": res[0][1], "threads": torch.get_num_threads(),
                      "seconds": secs, "tok_per_s": res[0][1] / secs, "transformers": __import__("transformers").__version__}))
