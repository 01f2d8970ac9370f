"""Writes testdata/lora/: LoRA adapters made by PEFT on tiny random decoders,
for attn to load and match.

  gpt2   GPT2LMHeadModel (Conv1D, fan_in_fan_out) with adapters on attn.c_attn,
         attn.c_proj, mlp.c_fc and mlp.c_proj; r 4, alpha 8
  llama  LlamaForCausalLM with grouped-query heads and adapters on q, k, v, o,
         gate, up and down projections; r 4, alpha 16; rsLoRA off

For each: testdata/lora/{v}/base (save_pretrained of the base model),
testdata/lora/{v}/adapter (PEFT's save_pretrained: adapter_config.json and
adapter_model.safetensors), and in testdata/lora/golden.safetensors the inputs
"{v}.input_ids" (B, T = 64), "{v}.targets", the adapted model's "{v}.logits",
"{v}.loss" and "{v}.grad.{key}" for every adapter matrix, keyed as in
adapter_model.safetensors. Two sequence classifiers (task_type SEQ_CLS, the
head trained in full as modules_to_save) add gpt2_cls and bert_cls, with
"{v}.lens" and "{v}.labels" of a right-padded batch. B is drawn at random (PEFT starts it at zero) so that
the adapters change the outputs.

Run: tools/reference/setup.sh 5 && .cache/venv-ref5/bin/python tools/reference/lora_golden.py
"""
from pathlib import Path

import peft
import torch
import torch.nn.functional as F
from peft import LoraConfig, get_peft_model
from safetensors.torch import save_file
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

torch.manual_seed(14)
V, B, T = 67, 2, 64
variants = {
    "gpt2": (GPT2LMHeadModel(GPT2Config(vocab_size=V, n_positions=T, n_embd=32, n_layer=2, n_head=4, resid_pdrop=0.0, embd_pdrop=0.0,
                                        attn_pdrop=0.0, bos_token_id=1, eos_token_id=2)),
             LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"],
                        fan_in_fan_out=True, task_type="CAUSAL_LM")),
    "llama": (LlamaForCausalLM(LlamaConfig(vocab_size=V, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                                           num_key_value_heads=2, max_position_embeddings=128, rms_norm_eps=1e-6, tie_word_embeddings=False,
                                           bos_token_id=1, eos_token_id=2)),
              LoraConfig(r=4, lora_alpha=16, lora_dropout=0.0,
                         target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"], task_type="CAUSAL_LM")),
}

out = Path("testdata/lora")
tensors = {}
for name, (model, cfg) in variants.items():
    model = model.float()
    model.config._attn_implementation = "eager"
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    model.save_pretrained(out / name / "base")
    pm = get_peft_model(model, cfg)
    with torch.no_grad():
        for n, p in pm.named_parameters():
            if "lora_B" in n:
                p.copy_(torch.randn_like(p) * 0.1)
    pm.save_pretrained(out / name / "adapter")
    (out / name / "adapter" / "README.md").unlink()  # PEFT's model-card template
    pm.train()
    tokens = torch.randint(0, V, (B, T + 1))
    x, y = tokens[:, :-1], tokens[:, 1:]
    logits = pm(input_ids=x).logits
    loss = F.cross_entropy(logits.reshape(-1, V), y.reshape(-1))
    loss.backward()
    tensors[f"{name}.input_ids"] = x.to(torch.int32).contiguous()
    tensors[f"{name}.targets"] = y.to(torch.int32).contiguous()
    tensors[f"{name}.logits"] = logits.detach().contiguous()
    tensors[f"{name}.loss"] = loss.detach().reshape(1)
    for n, p in pm.named_parameters():
        if p.requires_grad:
            tensors[f"{name}.grad.{n.replace('.default', '')}"] = p.grad.detach().clone()
    assert not any(p.grad is not None for n, p in pm.named_parameters() if "lora_" not in n), "the base must be frozen"

# Sequence classification (task_type SEQ_CLS): the head is trained in full
# beside the adapters (PEFT's modules_to_save), on a right-padded batch.
from transformers import BertConfig, BertForSequenceClassification, GPT2ForSequenceClassification
lens = [64, 40, 9]
cls_variants = {
    "gpt2_cls": (GPT2ForSequenceClassification(GPT2Config(vocab_size=V, n_positions=T, n_embd=32, n_layer=2, n_head=4, resid_pdrop=0.0,
                                                          embd_pdrop=0.0, attn_pdrop=0.0, summary_first_dropout=0.0, pad_token_id=0,
                                                          num_labels=3)),
                 LoraConfig(r=4, lora_alpha=8, target_modules=["attn.c_attn", "mlp.c_fc"], fan_in_fan_out=True, task_type="SEQ_CLS")),
    "bert_cls": (BertForSequenceClassification(BertConfig(vocab_size=V, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                                          intermediate_size=48, max_position_embeddings=128, hidden_dropout_prob=0.0,
                                                          attention_probs_dropout_prob=0.0, num_labels=2)),
                 LoraConfig(r=4, lora_alpha=8, target_modules=["query", "value", "intermediate.dense"], task_type="SEQ_CLS")),
}
for name, (model, cfg) in cls_variants.items():
    model.config._attn_implementation = "eager"
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    model.save_pretrained(out / name / "base")
    pm = get_peft_model(model, cfg)
    with torch.no_grad():
        for n, p in pm.named_parameters():
            if "lora_B" in n or "modules_to_save" in n:
                p.add_(torch.randn_like(p) * 0.1)
    pm.save_pretrained(out / name / "adapter")
    (out / name / "adapter" / "README.md").unlink()
    pm.train()
    ids = torch.zeros(len(lens), T, dtype=torch.long)
    mask = torch.zeros(len(lens), T, dtype=torch.long)
    for i, n in enumerate(lens):
        ids[i, :n] = torch.randint(3, V, (n,))
        mask[i, :n] = 1
    labels = torch.randint(0, model.config.num_labels, (len(lens),))
    o = pm(input_ids=ids, attention_mask=mask, labels=labels)
    o.loss.backward()
    tensors[f"{name}.input_ids"] = ids.to(torch.int32)
    tensors[f"{name}.lens"] = torch.tensor(lens, dtype=torch.int32)
    tensors[f"{name}.labels"] = labels.to(torch.int32)
    tensors[f"{name}.logits"] = o.logits.detach().contiguous()
    tensors[f"{name}.loss"] = o.loss.detach().reshape(1)
    for n, p in pm.named_parameters():
        if p.requires_grad:
            key = n.replace(".modules_to_save.default", "").replace(".default", "")
            tensors[f"{name}.grad.{key}"] = p.grad.detach().clone()

save_file(tensors, out / "golden.safetensors",
          metadata={"torch": torch.__version__, "transformers": __import__("transformers").__version__, "peft": peft.__version__})
print({k: tensors[f"{k}.loss"].item() for k in [*variants, *cls_variants]})
