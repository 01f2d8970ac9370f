"""Writes testdata/chat_templates.json: what transformers 5.x's
apply_chat_template renders for four chat-template styles (Llama 3 headers,
Qwen2 ChatML with its default system turn, Zephyr, [INST] with strict
alternation) and attn's own ChatML, over conversations with a system turn or
none, several turns, surrounding whitespace, newlines and non-ASCII text,
with add_generation_prompt on and off. A conversation a template refuses (by
raise_exception) is recorded with the error message.

The templates are tools/reference/chat_templates/*.jinja and
crates/tokenizer/src/chatml.jinja.

Run: tools/reference/setup.sh 5 && .cache/venv-ref5/bin/python tools/reference/chat_template_golden.py
"""
import json
from pathlib import Path

import transformers
from tokenizers import Tokenizer
from tokenizers.models import WordLevel
from transformers import PreTrainedTokenizerFast

here = Path(__file__).parent
templates = {
    "llama3": (here / "chat_templates/llama3.jinja", "<|begin_of_text|>", "<|eot_id|>"),
    "qwen2": (here / "chat_templates/qwen2.jinja", None, "<|im_end|>"),
    "zephyr": (here / "chat_templates/zephyr.jinja", "<s>", "</s>"),
    "inst": (here / "chat_templates/inst.jinja", "<s>", "</s>"),
    "chatml": (here / "../../crates/tokenizer/src/chatml.jinja", None, "<|im_end|>"),
}
conversations = [
    [{"role": "user", "content": "Hello!"}],
    [{"role": "system", "content": "You answer in one word."}, {"role": "user", "content": "Capital of France?"}],
    [{"role": "user", "content": "  2 + 2?  "}, {"role": "assistant", "content": "4\n"}, {"role": "user", "content": "And 3 + 3?"}],
    [{"role": "system", "content": "Translate to Spanish."}, {"role": "user", "content": "In the beginning\nGod created"},
     {"role": "assistant", "content": "En el principio creó Dios"}],
    [{"role": "user", "content": "naïve café — ünïcödé ✓ 日本語"}, {"role": "assistant", "content": " ok "}],
    [{"role": "assistant", "content": "I speak first."}, {"role": "user", "content": "Fine."}],
]

out = {"transformers": transformers.__version__, "templates": {}, "cases": []}
for name, (path, bos, eos) in templates.items():
    source = path.read_text()
    out["templates"][name] = {"source": source, "bos_token": bos, "eos_token": eos}
    tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(WordLevel({"<unk>": 0}, unk_token="<unk>")), bos_token=bos, eos_token=eos)
    tok.chat_template = source
    for messages in conversations:
        for gen in (True, False):
            case = {"template": name, "messages": messages, "add_generation_prompt": gen}
            try:
                case["rendered"] = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=gen)
            except Exception as e:  # the template's raise_exception
                case["error"] = str(e)
            out["cases"].append(case)

Path("testdata/chat_templates.json").write_text(json.dumps(out, indent=1, ensure_ascii=False) + "\n")
print(len(out["cases"]), "cases,", sum("error" in c for c in out["cases"]), "refused")
