"""Writes testdata/mt_metrics.json: corpus BLEU and chrF from PyPI sacrebleu
(defaults: 13a tokenizer, exp smoothing; chrF n=6, beta 2) for hypothesis /
reference sets that exercise the tokenizer's rules (punctuation, numbers with
periods, commas and dashes, entities, symbols), brevity penalty, missing
n-gram orders and Unicode text. attn's mt_metrics must give the same numbers.

Run: .cache/venv-ref5/bin/pip install sacrebleu==2.5.1 && .cache/venv-ref5/bin/python tools/reference/mt_metrics_golden.py
"""
import json

import sacrebleu

sets = {
    "bible": (
        ["In the beginning God created the heavens and the earth.", "And the earth was without form, and void;",
         "Then God said, \"Let there be light\": and there was light.", "It cost 3.50 dollars, 1,000 in all (see 4-5)."],
        ["In the beginning God created the heaven and the earth.", "And the earth was without form, and void; and darkness was upon the face of the deep.",
         "And God said, Let there be light: and there was light.", "It cost 3.50 dollars, 1,000 in all (see 4-5)."],
    ),
    "spanish": (
        ["En el principio creó Dios los cielos y la tierra.", "Y la tierra estaba desordenada y vacía...", "¿Dónde estás? — dijo él."],
        ["En el principio crió Dios los cielos y la tierra.", "Y la tierra estaba desadornada y vacía, y las tinieblas estaban sobre la haz del abismo.",
         "¿Dónde estás tú? dijo."],
    ),
    "symbols": (
        ["a&amp;b &lt;tag&gt; x/y {z} [w] ~q^ 10-20 end.", "short", "e.g., U.S.A. v1.2,3 -- ok!"],
        ["a&b <tag> x/y {z} [w] ~q^ 10 - 20 end .", "a much longer reference sentence here", "e.g. , U.S.A. v1.2, 3 -- ok !"],
    ),
    "no_4grams": (["the cat", "a dog ran"], ["the cat sat", "a dog ran far"]),
    "nothing": (["xyz"], ["abc def"]),
}
out = {}
for name, (hyps, refs) in sets.items():
    out[name] = {
        "hyps": hyps,
        "refs": refs,
        "bleu": sacrebleu.corpus_bleu(hyps, [refs]).score,
        "chrf": sacrebleu.corpus_chrf(hyps, [refs]).score,
        "tok13a": [sacrebleu.tokenizers.tokenizer_13a.Tokenizer13a()(h) for h in hyps],
    }
    print(name, out[name]["bleu"], out[name]["chrf"])
out["_sacrebleu"] = sacrebleu.__version__
with open("testdata/mt_metrics.json", "w") as f:
    json.dump(out, f, indent=1, ensure_ascii=False)
