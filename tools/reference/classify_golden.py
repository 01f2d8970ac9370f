"""Writes testdata/classify/: sequence classifiers from transformers 5.x for attn to match.

  gpt2  GPT2ForSequenceClassification, 3 labels, pad_token_id 0: pooled at each row's last non-pad token
  bert  BertForSequenceClassification, 2 labels: pooler (dense + tanh over [CLS]) and classifier

Each: the folder as save_pretrained writes it (testdata/classify/{v}: config.json with
architectures and id2label, model.safetensors), and in testdata/classify/golden.safetensors a
right-padded batch of lengths 64, 40 and 9 with its attention mask: "{v}.input_ids" (B, T = 64),
"{v}.lens" (B), "{v}.labels" (B), "{v}.logits" (B, K), "{v}.loss" and "{v}.grad.{name}" for
every parameter. Dropout is 0 so that training and evaluation agree.

Run: tools/reference/setup.sh 5 && .cache/venv-ref5/bin/python tools/reference/classify_golden.py
"""
from pathlib import Path

import torch
from safetensors.torch import save_file
from transformers import BertConfig, BertForSequenceClassification, GPT2Config, GPT2ForSequenceClassification

torch.manual_seed(14)
V, T, lens = 67, 64, [64, 40, 9]
variants = {
    "gpt2": GPT2ForSequenceClassification(GPT2Config(vocab_size=V, n_positions=T, n_embd=32, n_layer=2, n_head=4, resid_pdrop=0.0, embd_pdrop=0.0,
                                                     attn_pdrop=0.0, summary_first_dropout=0.0, pad_token_id=0, num_labels=3,
                                                     id2label={0: "negative", 1: "neutral", 2: "positive"},
                                                     label2id={"negative": 0, "neutral": 1, "positive": 2})),
    "bert": BertForSequenceClassification(BertConfig(vocab_size=V, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48,
                                                     max_position_embeddings=128, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
                                                     num_labels=2, id2label={0: "ham", 1: "spam"}, label2id={"ham": 0, "spam": 1})),
}
out = Path("testdata/classify")
tensors = {}
for name, model in variants.items():
    model.config._attn_implementation = "eager"
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    model.save_pretrained(out / name)
    model.train()
    B = len(lens)
    ids = torch.zeros(B, T, dtype=torch.long)
    mask = torch.zeros(B, T, dtype=torch.long)
    for i, n in enumerate(lens):
        ids[i, :n] = torch.randint(3, V, (n,))
        mask[i, :n] = 1
    labels = torch.randint(0, model.config.num_labels, (B,))
    o = model(input_ids=ids, attention_mask=mask, labels=labels)
    o.loss.backward()
    tensors[f"{name}.input_ids"] = ids.to(torch.int32)
    tensors[f"{name}.lens"] = torch.tensor(lens, dtype=torch.int32)
    tensors[f"{name}.labels"] = labels.to(torch.int32)
    tensors[f"{name}.logits"] = o.logits.detach().contiguous()
    tensors[f"{name}.loss"] = o.loss.detach().reshape(1)
    for n, p in model.named_parameters():
        tensors[f"{name}.grad.{n}"] = p.grad.detach().clone()
save_file(tensors, out / "golden.safetensors", metadata={"torch": torch.__version__, "transformers": __import__("transformers").__version__})
print({k: tensors[f"{k}.loss"].item() for k in variants})
