"""attn's tokenizer side by side with tiktoken and Hugging Face tokenizers.

  cargo build --release
  scripts/fetch_shakespeare.sh && scripts/fetch_tokenizers.sh && tools/reference/setup.sh
  .cache/venv-ref/bin/python tools/bench/compare_tokenizers.py [--rounds 3]

Three comparisons, each on the same text, vocabulary and thread count:
  encode  MB/s on the Shakespeare corpus (5 MB) with GPT-2's r50k and with
          cl100k, 1 and 2 threads. The text is cut into 64 chunks at newlines
          no piece crosses, so every program produces the same ids (checked);
          tiktoken and HF encode the chunks as a batch, attn encodes the whole
          text (it makes such cuts itself).
  train   seconds to train a 32k byte-level BPE vocabulary on the corpus,
          against HF's BpeTrainer with GPT-2's ByteLevel pre-tokenizer. attn's
          time is the whole `attn tokenizer train` process, reading and saving
          included; HF's is its train() call.
  compress bytes per token on held-out text (the last 10%) for vocabularies
          of 8k and 32k trained by each on the first 90%. The tokenizer.json
          attn writes is also loaded in HF, which must give attn's ids.

Each worker runs in its own process (rayon reads its thread count at start),
the programs alternate round by round, and medians are reported with the load.
"""
import argparse, json, os, statistics, subprocess, sys, tempfile, time

ATTN = "target/release/attn"
GPT2_PAT = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
CL_PAT = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
VOCABS = {"r50k": ".cache/tokenizers/gpt2", "cl100k": ".cache/tokenizers/cl100k_base.tiktoken"}


def chunks(text, n):
    """Cuts after a newline with non-whitespace on both sides (as attn does)."""
    cuts, L = [0], len(text)
    for k in range(1, n):
        i = max(k * L // n, cuts[-1])
        while True:
            i = text.find("\n", i)
            if i < 0 or (i > 0 and i + 1 < L and not text[i - 1].isspace() and not text[i + 1].isspace()):
                break
            i += 1
        if i < 0:
            break
        cuts.append(i + 1)
    cuts.append(L)
    return [text[a:b] for a, b in zip(cuts, cuts[1:]) if b > a]


def worker(args):
    text = open(args.data, encoding="utf-8").read()
    nbytes = len(text.encode())
    if args.worker == "hf-train":
        from tokenizers import Tokenizer, models, pre_tokenizers, trainers
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        trainer = trainers.BpeTrainer(vocab_size=args.vocab_size, special_tokens=["<|endoftext|>"],
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
        t = time.perf_counter()
        tok.train([args.data], trainer)
        secs = time.perf_counter() - t
        if args.save:
            tok.save(args.save)
        print(json.dumps({"secs": secs}))
        return
    parts = chunks(text, 64)
    if args.worker == "tiktoken":
        import tiktoken
        from tiktoken.load import load_tiktoken_bpe
        if args.vocab == "cl100k":
            enc = tiktoken.Encoding("cl100k", pat_str=CL_PAT, mergeable_ranks=load_tiktoken_bpe(VOCABS["cl100k"]), special_tokens={})
        else:
            # r50k's ranks are its vocab ids; the HF file attn converted holds them.
            enc = tiktoken.Encoding("r50k", pat_str=GPT2_PAT, mergeable_ranks=gpt2_ranks(args.hf_json), special_tokens={})
        run = lambda: [i for ids in enc.encode_ordinary_batch(parts, num_threads=args.threads) for i in ids]
    else:
        from tokenizers import Tokenizer
        tok = Tokenizer.from_file(args.hf_json)
        run = lambda: [i for e in tok.encode_batch(parts, add_special_tokens=False) for i in e.ids]
    ids = run()
    best = min(timed(run) for _ in range(3))
    print(json.dumps({"mb_per_s": nbytes / best / 1e6, "tokens": len(ids)}))


def timed(f):
    t = time.perf_counter()
    f()
    return time.perf_counter() - t


def gpt2_ranks(hf_json):
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b); cs.append(256 + n); n += 1
    dec = {chr(c): b for b, c in zip(bs, cs)}
    vocab = json.load(open(hf_json))["model"]["vocab"]
    return {bytes(dec[ch] for ch in tok): i for tok, i in vocab.items()}


def spawn(kind, threads, **kw):
    env = dict(os.environ, RAYON_NUM_THREADS=str(threads), RAYON_RS_NUM_THREADS=str(threads), TOKENIZERS_PARALLELISM="true")
    cmd = [sys.executable, __file__, "--worker", kind, "--threads", str(threads)] + [f"--{k.replace('_', '-')}={v}" for k, v in kw.items()]
    out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def attn(*args):
    out = subprocess.run([ATTN, *args], check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def attn_ids(tokenizer, path):
    out = subprocess.run([ATTN, "tokenizer", "encode", "--tokenizer", tokenizer, "--data", path], check=True, capture_output=True, text=True).stdout
    return [int(x) for x in out.split()]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--data", default=".cache/data/shakespeare.txt")
    ap.add_argument("--worker")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--vocab")
    ap.add_argument("--hf-json")
    ap.add_argument("--vocab-size", type=int, default=32000)
    ap.add_argument("--save")
    args = ap.parse_args()
    if args.worker:
        return worker(args)

    tmp = tempfile.mkdtemp()
    print(f"load before: {os.getloadavg()[0]:.2f}; data: {args.data} ({os.path.getsize(args.data) / 1e6:.1f} MB)")
    report = {"encode": [], "train": [], "compress": []}

    for vocab, path in VOCABS.items():
        hf_json = os.path.join(tmp, f"{vocab}.json")
        subprocess.run([ATTN, "tokenizer", "convert", "--tokenizer", path, "--out", hf_json], check=True, capture_output=True)
        for threads in (1, 2):
            got = {"attn": [], "tiktoken": [], "hf": []}
            counts = set()
            for _ in range(args.rounds):
                r = attn("bench", "tokenizer", "--tokenizer", path, "--data", args.data, "--threads", str(threads), "--rounds", "3")
                got["attn"].append(r["mb_per_s"]); counts.add(r["tokens"])
                for kind in ("tiktoken", "hf"):
                    r = spawn(kind, threads, data=args.data, vocab=vocab, hf_json=hf_json)
                    got[kind].append(r["mb_per_s"]); counts.add(r["tokens"])
            assert len(counts) == 1, f"token counts differ: {counts}"
            row = {"vocab": vocab, "threads": threads, **{k: round(statistics.median(v), 1) for k, v in got.items()}}
            row["vs_tiktoken"] = round(row["attn"] / row["tiktoken"], 2)
            row["vs_hf"] = round(row["attn"] / row["hf"], 2)
            print(json.dumps(row), flush=True)
            report["encode"].append(row)

    for threads in (1, 2):
        got = {"attn": [], "hf": []}
        for _ in range(args.rounds):
            t = time.perf_counter()
            subprocess.run([ATTN, "tokenizer", "train", "--data", args.data, "--vocab-size", "32000", "--special", "<|endoftext|>",
                            "--out", os.path.join(tmp, "attn32k.json"), "--threads", str(threads)], check=True, capture_output=True)
            got["attn"].append(time.perf_counter() - t)
            got["hf"].append(spawn("hf-train", threads, data=args.data, vocab_size=32000)["secs"])
        row = {"train_vocab": 32000, "threads": threads, **{k + "_s": round(statistics.median(v), 2) for k, v in got.items()}}
        row["speedup"] = round(row["hf_s"] / row["attn_s"], 2)
        print(json.dumps(row), flush=True)
        report["train"].append(row)

    text = open(args.data, encoding="utf-8").read()
    cut = text.rfind("\n", 0, int(len(text) * 0.9)) + 1
    train_path, held_path = os.path.join(tmp, "train.txt"), os.path.join(tmp, "held.txt")
    open(train_path, "w", encoding="utf-8").write(text[:cut])
    open(held_path, "w", encoding="utf-8").write(text[cut:])
    held_bytes = len(text[cut:].encode())
    from tokenizers import Tokenizer
    for n in (8000, 32000):
        ours, theirs = os.path.join(tmp, f"attn{n}.json"), os.path.join(tmp, f"hf{n}.json")
        subprocess.run([ATTN, "tokenizer", "train", "--data", train_path, "--vocab-size", str(n), "--special", "<|endoftext|>", "--out", ours],
                       check=True, capture_output=True)
        spawn("hf-train", 2, data=train_path, vocab_size=n, save=theirs)
        a = attn_ids(ours, held_path)
        h = Tokenizer.from_file(theirs).encode(text[cut:]).ids
        same = Tokenizer.from_file(ours).encode(text[cut:]).ids == a
        row = {"vocab": n, "attn_bytes_per_token": round(held_bytes / len(a), 4), "hf_bytes_per_token": round(held_bytes / len(h), 4),
               "attn_tokenizer_json_in_hf_same_ids": same}
        row["attn_vs_hf"] = f"{100 * (row['attn_bytes_per_token'] / row['hf_bytes_per_token'] - 1):+.2f}%"
        print(json.dumps(row), flush=True)
        report["compress"].append(row)
    print(f"load after: {os.getloadavg()[0]:.2f}")
    print(json.dumps(report))


if __name__ == "__main__":
    main()
