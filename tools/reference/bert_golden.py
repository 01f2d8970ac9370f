"""Writes the BERT fixtures:

testdata/bert_golden.safetensors: a tiny random-init BertModel (transformers,
eager attention) with two sentences, their last hidden states and every
layer's attention probabilities.

testdata/minilm_reference.safetensors: for all-MiniLM-L6-v2 (fetched by
scripts/fetch_minilm.sh), sentence-transformers' embeddings of a varied set of
sentences, HF tokenizers' ids for each (no padding), and the attention
probabilities of the first sentence.

Run after tools/reference/setup.sh and scripts/fetch_minilm.sh:
  .cache/venv-ref/bin/python tools/reference/bert_golden.py
"""
import json
import torch
from safetensors.torch import save_file
from transformers import BertConfig, BertModel

torch.manual_seed(4321)
cfg = BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                 max_position_embeddings=24, type_vocab_size=2, hidden_act="gelu", layer_norm_eps=1e-12,
                 hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, attn_implementation="eager")
model = BertModel(cfg, add_pooling_layer=False).float().eval()
with torch.no_grad():
    for p in model.parameters():
        p.add_(torch.randn_like(p) * 0.1)
tensors = {f"param.{n}": p.detach().clone() for n, p in model.named_parameters()}
for i, t in enumerate([7, 12]):
    ids = torch.randint(0, cfg.vocab_size, (1, t))
    with torch.no_grad():
        out = model(ids, output_attentions=True)
    tensors[f"ids.{i}"] = ids[0].to(torch.int32)
    tensors[f"hidden.{i}"] = out.last_hidden_state[0]
    tensors[f"attentions.{i}"] = torch.stack([a[0] for a in out.attentions])  # (L, NH, T, T)
meta = {"torch": torch.__version__, "transformers": __import__("transformers").__version__, "config": cfg.to_json_string(use_diff=False)}
save_file({k: v.contiguous() for k, v in tensors.items()}, "testdata/bert_golden.safetensors", metadata=meta)
print("wrote testdata/bert_golden.safetensors")

from sentence_transformers import SentenceTransformer
from tokenizers import Tokenizer

path = ".cache/models/all-MiniLM-L6-v2"
sentences = [
    "The quick brown fox jumps over the lazy dog.",
    "king", "queen", "car", "man", "woman",
    "Café au lait, s'il vous plaît — naïve résumé!",
    "日本語のテキストと中文文本",
    "I love 🍕 and ☕!!!",
    "In 1905, Einstein published 4 papers (on light, motion & mass).",
    "HELLO World, this Is MiXeD CaSe",
    'fn main() { println!("hi"); }',
    "  tabs\tand\nnew lines  ",
    "A longer sentence about sentence embeddings, which average the token vectors of the last layer "
    "and normalise the result to unit length, so that the dot product is the cosine similarity.",
]
st = SentenceTransformer(path, device="cpu")
emb = st.encode(sentences, convert_to_tensor=True, normalize_embeddings=False, batch_size=32)
tok = Tokenizer.from_file(f"{path}/tokenizer.json")
tok.no_padding()
tok.no_truncation()
ref = {"embeddings": emb.float()}
for i, s in enumerate(sentences):
    ref[f"ids.{i}"] = torch.tensor(tok.encode(s).ids, dtype=torch.int32)
bert = BertModel.from_pretrained(path, attn_implementation="eager").eval()
with torch.no_grad():
    out = bert(ref["ids.0"].long()[None], output_attentions=True)
ref["attentions.0"] = torch.stack([a[0] for a in out.attentions])
save_file({k: v.contiguous() for k, v in ref.items()}, "testdata/minilm_reference.safetensors",
          metadata={"sentences": json.dumps(sentences), "sentence_transformers": __import__("sentence_transformers").__version__,
                    "transformers": __import__("transformers").__version__, "torch": torch.__version__})
cos = torch.nn.functional.cosine_similarity
print("wrote testdata/minilm_reference.safetensors;",
      f"cos(king, queen) = {cos(emb[1], emb[2], dim=0):.4f}, cos(king, car) = {cos(emb[1], emb[3], dim=0):.4f}")
