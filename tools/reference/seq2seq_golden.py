"""Writes the encoder-decoder fixtures attn's Seq2Seq must match, from
random-init transformers (5.x) models of odd shapes:

  marian   MarianMTModel: d_model 40, 3 encoder + 2 decoder layers, 2 heads (head dim 20),
           FFN 56, swish, scale_embedding, pad 60 = decoder start, eos 0
  bart     BartForConditionalGeneration: d_model 36, 2 encoder + 3 decoder layers,
           3 heads (head dim 12), FFN 48, gelu, learned positions (offset 2), layernorm_embedding
  mbart    MBartForConditionalGeneration: pre-norm blocks with a final norm per stack,
           d_model 48, 2 + 2 layers, 4 heads (head dim 12), FFN 40, relu, scale_embedding

Each model's folder (config.json + model.safetensors, as save_pretrained writes
it) goes to testdata/seq2seq/{v}/. testdata/seq2seq/golden.safetensors holds, for a
right-padded batch of 2 pairs (sources of 70 and 53 tokens, targets of 66 and
64, so S, T >= 64):
  "{v}.src" (B, S), "{v}.src_len", "{v}.labels" (B, T; -100 on padding),
  "{v}.decoder_input_ids", "{v}.logits" (B, T, V), "{v}.loss" (transformers' loss
  with labels), "{v}.loss_ls" (label smoothing 0.1), "{v}.grad.{name}" for every
  tensor in the folder (final_logits_bias, a buffer, has none),
  "{v}.greedy" and "{v}.beam4" (B, L) from generate() on the two sources with
  max_new_tokens 24 (beam: 4 beams, length_penalty 1.0, early_stopping False),
  "{v}.greedy_len" and "{v}.beam4_len": tokens before the padding.

Run: tools/reference/setup.sh 5 && .cache/venv-ref5/bin/python tools/reference/seq2seq_golden.py
"""
import os
import shutil

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from transformers import BartConfig, BartForConditionalGeneration, MarianConfig, MarianMTModel, MBartConfig, MBartForConditionalGeneration

torch.manual_seed(2026)
V = 61
OUT = "testdata/seq2seq"
EOS_BIAS = {"marian": 2.4, "bart": 2.4, "mbart": 0.3}
common = dict(vocab_size=V, max_position_embeddings=128, dropout=0.0, attention_dropout=0.0, activation_dropout=0.0,
              init_std=0.15, attn_implementation="eager")
variants = {
    "marian": (MarianMTModel, MarianConfig(**common, d_model=40, encoder_layers=3, decoder_layers=2, encoder_attention_heads=2,
                                           decoder_attention_heads=2, encoder_ffn_dim=56, decoder_ffn_dim=56,
                                           activation_function="swish", scale_embedding=True, pad_token_id=60,
                                           eos_token_id=0, decoder_start_token_id=60, forced_eos_token_id=0)),
    "bart": (BartForConditionalGeneration, BartConfig(**common, d_model=36, encoder_layers=2, decoder_layers=3,
                                                      encoder_attention_heads=3, decoder_attention_heads=3, encoder_ffn_dim=48,
                                                      decoder_ffn_dim=48, activation_function="gelu", pad_token_id=1,
                                                      bos_token_id=0, eos_token_id=2, decoder_start_token_id=2,
                                                      forced_eos_token_id=2)),
    "mbart": (MBartForConditionalGeneration, MBartConfig(**common, d_model=48, encoder_layers=2, decoder_layers=2,
                                                         encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=40,
                                                         decoder_ffn_dim=40, activation_function="relu", scale_embedding=True,
                                                         pad_token_id=1, bos_token_id=0, eos_token_id=2, decoder_start_token_id=2,
                                                         forced_eos_token_id=2)),
}

def batch(cfg, src_lens, tgt_lens):
    """Random ids avoiding the special tokens; sources and targets end in EOS."""
    special = {cfg.pad_token_id, cfg.eos_token_id, cfg.decoder_start_token_id, getattr(cfg, "bos_token_id", None)}
    ok = torch.tensor([i for i in range(V) if i not in special])
    S, T = max(src_lens), max(tgt_lens)
    src = torch.full((2, S), cfg.pad_token_id)
    labels = torch.full((2, T), -100)
    for i, (s, t) in enumerate(zip(src_lens, tgt_lens)):
        src[i, : s - 1] = ok[torch.randint(len(ok), (s - 1,))]
        src[i, s - 1] = cfg.eos_token_id
        labels[i, : t - 1] = ok[torch.randint(len(ok), (t - 1,))]
        labels[i, t - 1] = cfg.eos_token_id
    mask = (torch.arange(S)[None, :] < torch.tensor(src_lens)[:, None]).long()
    dec_in = torch.full((2, T), cfg.pad_token_id)
    dec_in[:, 0] = cfg.decoder_start_token_id
    dec_in[:, 1:] = labels[:, :-1].masked_fill(labels[:, :-1] == -100, cfg.pad_token_id)
    return src, mask, labels, dec_in

tensors, meta = {}, {"torch": torch.__version__, "transformers": __import__("transformers").__version__}
for name, (cls, cfg) in variants.items():
    model = cls(cfg).float()
    with torch.no_grad():
        # Norms and the logits bias away from their 1 / 0 initial values, so a
        # mixed-up tensor shows.
        for n, p in model.named_parameters():
            if "layer_norm" in n or "layernorm" in n:
                p.add_(0.1 * torch.randn_like(p))
        model.final_logits_bias.normal_(0.0, 0.5)
        # An EOS that competes, so generations end at different lengths and
        # beam search finishes hypotheses before the length limit.
        model.final_logits_bias[0, cfg.eos_token_id] = EOS_BIAS[name]
    model.eval()
    folder = f"{OUT}/{name}"
    shutil.rmtree(folder, ignore_errors=True)
    model.save_pretrained(folder)
    for extra in ["generation_config.json"]:
        if os.path.exists(f"{folder}/{extra}"):
            os.remove(f"{folder}/{extra}")
    src, mask, labels, dec_in = batch(cfg, [70, 53], [66, 64])
    out = model(input_ids=src, attention_mask=mask, decoder_input_ids=dec_in, labels=labels)
    out.loss.backward()
    ls = F.cross_entropy(out.logits.reshape(-1, V), labels.reshape(-1), ignore_index=-100, label_smoothing=0.1)
    v = name
    tensors[f"{v}.src"] = src.int()
    tensors[f"{v}.src_len"] = mask.sum(1).int()
    tensors[f"{v}.labels"] = labels.int()
    tensors[f"{v}.decoder_input_ids"] = dec_in.int()
    tensors[f"{v}.logits"] = out.logits.detach().contiguous()
    tensors[f"{v}.loss"] = out.loss.detach().reshape(1)
    tensors[f"{v}.loss_ls"] = ls.detach().reshape(1)
    params = dict(model.named_parameters())
    from safetensors import safe_open
    with safe_open(f"{folder}/model.safetensors", "pt") as f:
        saved = list(f.keys())
    for n in saved:
        if n in params and params[n].grad is not None:
            tensors[f"{v}.grad.{n}"] = params[n].grad.detach().clone().contiguous()
    with torch.no_grad():
        for kind, kw in [("greedy", dict(num_beams=1, do_sample=False)),
                         ("beam4", dict(num_beams=4, do_sample=False, length_penalty=1.0, early_stopping=False))]:
            gen = model.generate(input_ids=src, attention_mask=mask, max_new_tokens=24, **kw)
            tensors[f"{v}.{kind}"] = gen.int().contiguous()
            # Tokens up to and including the first EOS after the start token (or all).
            lens = []
            for row in gen.tolist():
                n = len(row)
                for j in range(1, len(row)):
                    if row[j] == cfg.eos_token_id:
                        n = j + 1
                        break
                lens.append(n)
            tensors[f"{v}.{kind}_len"] = torch.tensor(lens, dtype=torch.int32)
            print(name, kind, gen.tolist())
    print(name, "loss", out.loss.item(), "smoothed", ls.item())
save_file(tensors, f"{OUT}/golden.safetensors", metadata=meta)
