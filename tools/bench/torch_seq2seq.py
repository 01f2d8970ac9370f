"""A Marian- or mBART-shaped encoder-decoder in PyTorch, from torch.nn's
TransformerEncoder / TransformerDecoder layers (ReLU, no dropout): shared
embedding scaled by sqrt(d_model), tied output head. For a Marian config,
post-norm blocks and Marian's sinusoidal positions; for an mBART config (what
attn's `--norm-position pre` writes), pre-norm blocks with a final norm per
stack, learned positions (offset 2) and a norm on the embeddings, per side.
The peer of attn's translation runs and benchmarks.
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F


def sinusoidal(n, d):
    # Marian's layout: sines of every even feature, then cosines of every odd one.
    pos = torch.arange(n, dtype=torch.float64)[:, None]
    j = torch.arange(d, dtype=torch.float64)[None, :]
    ang = pos / torch.pow(10000.0, 2 * torch.div(j, 2, rounding_mode="floor") / d)
    half = (d + 1) // 2
    out = torch.empty(n, d, dtype=torch.float64)
    out[:, :half] = torch.sin(ang[:, 0::2])
    out[:, half:] = torch.cos(ang[:, 1::2])
    return out.float()


class Peer(nn.Module):
    def __init__(self, cfg, pad=None):
        super().__init__()
        C, V, H = cfg["d_model"], cfg["vocab_size"], cfg["encoder_attention_heads"]
        self.C, self.pad = C, cfg["pad_token_id"] if pad is None else pad
        self.shared = nn.Parameter(torch.randn(V, C) * 0.02)
        with torch.no_grad():
            self.shared[self.pad].zero_()
        kind = cfg.get("model_type", "marian")
        assert kind in ("marian", "mbart"), f"model_type {kind}: the peer is Marian or mBART"
        self.pre = kind == "mbart"
        n_pos = cfg["max_position_embeddings"]
        if not self.pre:
            self.register_buffer("pos", sinusoidal(n_pos, C))
        else:
            # mBART: learned positions from index 2, and the sum normalized.
            self.enc_pos = nn.Parameter(torch.empty(n_pos + 2, C))
            self.dec_pos = nn.Parameter(torch.empty(n_pos + 2, C))
            self.enc_emb_norm, self.dec_emb_norm = nn.LayerNorm(C), nn.LayerNorm(C)
        kw = dict(dropout=0.0, activation="relu", batch_first=True, norm_first=self.pre)
        enc = nn.TransformerEncoderLayer(C, H, cfg["encoder_ffn_dim"], **kw)
        dec = nn.TransformerDecoderLayer(C, cfg["decoder_attention_heads"], cfg["decoder_ffn_dim"], **kw)
        final = (lambda: nn.LayerNorm(C)) if self.pre else (lambda: None)
        self.encoder = nn.TransformerEncoder(enc, cfg["encoder_layers"], norm=final(), enable_nested_tensor=False)
        self.decoder = nn.TransformerDecoder(dec, cfg["decoder_layers"], norm=final())
        for n, p in self.named_parameters():
            if n == "shared":
                continue
            if "norm" in n:
                nn.init.ones_(p) if n.endswith("weight") else nn.init.zeros_(p)
            elif n.endswith("bias"):
                nn.init.zeros_(p)
            else:
                nn.init.normal_(p, 0.0, 0.02)

    def embed(self, ids, side):
        x = F.embedding(ids, self.shared, padding_idx=self.pad) * math.sqrt(self.C)
        T = ids.shape[1]
        if not self.pre:
            return x + self.pos[:T]
        pos, norm = (self.enc_pos, self.enc_emb_norm) if side == "encoder" else (self.dec_pos, self.dec_emb_norm)
        return norm(x + pos[2 : 2 + T])

    def forward(self, src, src_pad, tgt_in):
        mem = self.encoder(self.embed(src, "encoder"), src_key_padding_mask=src_pad)
        T = tgt_in.shape[1]
        causal = torch.triu(torch.full((T, T), float("-inf")), diagonal=1)
        h = self.decoder(self.embed(tgt_in, "decoder"), mem, tgt_mask=causal, memory_key_padding_mask=src_pad)
        return h @ self.shared.t()


def make_batch(pairs, idx, pad, start):
    """Right-padded (src, src_pad_mask, decoder inputs, labels with -100) for pairs[idx]."""
    S = max(len(pairs[i][0]) for i in idx)
    T = max(len(pairs[i][1]) for i in idx)
    src = torch.full((len(idx), S), pad)
    tgt_in = torch.full((len(idx), T), pad)
    labels = torch.full((len(idx), T), -100)
    for r, i in enumerate(idx):
        s, t = pairs[i]
        src[r, : len(s)] = torch.tensor(s)
        labels[r, : len(t)] = torch.tensor(t)
        tgt_in[r, 0] = start
        k = min(len(t), T - 1)
        tgt_in[r, 1 : 1 + k] = torch.tensor(t[:k])
    return src, src == pad, tgt_in, labels


