#!/usr/bin/env bash
# English-Spanish verse pairs from two public-domain Bibles in Debian: the
# World English Bible (sword-text-web, module engWEB2015eb) and the Reina-Valera
# 1909 (sword-text-sparv, module spaRV1909eb), read with mod2imp
# (libsword-utils). OSIS markup, notes and titles are stripped; verses present
# in both are paired. Whole books are held out, so no verse of a validation or
# test book is trained on:
#   val:  Ruth, Jonah, Colossians, Mark         test: Esther, Habakkuk, Philippians, James, 1 John
# Writes .cache/data/bible-pairs/{train,val,test}.tsv (English<TAB>Spanish) and
# prints the folder. Idempotent: a cached copy is reused.
set -euo pipefail
cd "$(dirname "$0")/.."
out=.cache/data/bible-pairs
if [ -s "$out/train.tsv" ] && [ -s "$out/val.tsv" ] && [ -s "$out/test.tsv" ]; then echo "$out"; exit 0; fi
if ! command -v mod2imp >/dev/null; then
  if [ "$(id -u)" = 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q libsword-utils >&2
  else
    echo "mod2imp is missing: sudo apt-get install libsword-utils" >&2; exit 1
  fi
fi
sword=.cache/data/sword
mkdir -p "$sword/debs" "$sword/root" "$out"
# The text packages are only unpacked, into the cache; nothing is installed for them.
(cd "$sword/debs" && apt-get download sword-text-web sword-text-sparv >&2)
for deb in "$sword"/debs/*.deb; do dpkg-deb -x "$deb" "$sword/root"; done
export SWORD_PATH="$PWD/$sword/root/usr/share/sword"
mod2imp engWEB2015eb > "$sword/eng.imp"
mod2imp spaRV1909eb > "$sword/spa.imp"
python3 - "$sword/eng.imp" "$sword/spa.imp" "$out" <<'PY'
import html, re, sys

def verses(path):
    """(book, chapter, verse) -> plain text, from a mod2imp export."""
    out, key, buf = {}, None, []
    def flush():
        if key is not None:
            text = " ".join(buf)
            text = re.sub(r"<note\b.*?</note>", " ", text, flags=re.S)
            text = re.sub(r"<title\b.*?</title>", " ", text, flags=re.S)
            text = re.sub(r"<[^>]+>", " ", text)
            text = html.unescape(text)
            text = re.sub(r"\s+", " ", text).strip()
            text = re.sub(r" ([,.;:!?)\]])", r"\1", text)
            text = re.sub(r"([(\[]) ", r"\1", text)
            if text:
                out[key] = text
    for line in open(path, encoding="utf-8"):
        line = line.rstrip("\n")
        m = re.match(r"^\$\$\$(.+) (\d+):(\d+)$", line)
        if line.startswith("$$$"):
            flush()
            key, buf = None, []
            if m and int(m.group(2)) > 0 and int(m.group(3)) > 0:
                key = (m.group(1), int(m.group(2)), int(m.group(3)))
            continue
        if key is not None:
            buf.append(line)
    flush()
    return out

eng, spa = verses(sys.argv[1]), verses(sys.argv[2])
val = {"Ruth", "Jonah", "Colossians", "Mark"}
test = {"Esther", "Habakkuk", "Philippians", "James", "I John"}
files = {name: open(f"{sys.argv[3]}/{name}.tsv.tmp", "w", encoding="utf-8") for name in ["train", "val", "test"]}
counts = {k: 0 for k in files}
for key in eng:
    if key in spa:
        split = "val" if key[0] in val else "test" if key[0] in test else "train"
        files[split].write(f"{eng[key]}\t{spa[key]}\n")
        counts[split] += 1
for f in files.values():
    f.close()
import os
for name in files:
    os.replace(f"{sys.argv[3]}/{name}.tsv.tmp", f"{sys.argv[3]}/{name}.tsv")
print(f"{len(eng)} English and {len(spa)} Spanish verses; pairs: {counts}", file=sys.stderr)
assert counts["val"] > 0 and counts["test"] > 0, "a held-out book was not found; check the book names mod2imp prints"
PY
echo "$out"
