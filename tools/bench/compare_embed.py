"""all-MiniLM-L6-v2 sentence embeddings, attn against sentence-transformers on
the CPU, same sentences, same threads.

  cargo build --release
  scripts/fetch_shakespeare.sh && scripts/fetch_minilm.sh && tools/reference/setup.sh
  .cache/venv-ref/bin/python tools/bench/compare_embed.py [--rounds 3] [--threads 2]

The sentences are 2000 lines of 4 to 14 words from the Shakespeare corpus
(8.4 words, 13.6 tokens on average with [CLS] and [SEP]). Both programs
tokenize and embed all of them per round; sentence-transformers uses its
default batch size (32, sorted by length). The rounds alternate; medians are
reported, with the load and the GFLOP/s the matrix products imply.
"""
import argparse, json, os, statistics, subprocess, sys, tempfile, time

MODEL = ".cache/models/all-MiniLM-L6-v2"


def sentences(n=2000):
    lines = [l.strip() for l in open(".cache/data/shakespeare.txt", encoding="utf-8") if 4 <= len(l.split()) <= 14]
    return lines[1000:1000 + n]


def peer(path, threads):
    import torch
    torch.set_num_threads(threads)
    from sentence_transformers import SentenceTransformer
    st = SentenceTransformer(MODEL, device="cpu")
    s = [l for l in open(path, encoding="utf-8").read().split("\n") if l.strip()]
    st.encode(s[:64])
    best = min(timed(lambda: st.encode(s, batch_size=32)) for _ in range(2))
    print(json.dumps({"sentences_per_s": len(s) / best}))


def timed(f):
    t = time.perf_counter()
    f()
    return time.perf_counter() - t


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--peer")
    args = ap.parse_args()
    if args.peer:
        return peer(args.peer, args.threads)
    path = os.path.join(tempfile.mkdtemp(), "sentences.txt")
    open(path, "w", encoding="utf-8").write("\n".join(sentences()) + "\n")
    print(f"load before: {os.getloadavg()[0]:.2f}")
    got = {"attn": [], "sentence-transformers": []}
    tokens = None
    for _ in range(args.rounds):
        out = subprocess.run(["target/release/attn", "bench", "embed", "--model", MODEL, "--data", path, "--threads", str(args.threads), "--rounds", "2"],
                             check=True, capture_output=True, text=True).stdout
        r = json.loads(out.strip().splitlines()[-1])
        tokens = r["tokens"]
        got["attn"].append(r["sentences_per_s"])
        out = subprocess.run([sys.executable, __file__, "--peer", path, "--threads", str(args.threads)], check=True, capture_output=True, text=True).stdout
        got["sentence-transformers"].append(json.loads(out.strip().splitlines()[-1])["sentences_per_s"])
        print({k: round(v[-1], 1) for k, v in got.items()}, flush=True)
    med = {k: statistics.median(v) for k, v in got.items()}
    # Per token and layer: Q, K, V, output (4 C^2) and the MLP (2 C I) multiply-adds.
    c, i, layers = 384, 1536, 6
    flops = 2 * tokens * layers * (4 * c * c + 2 * c * i)
    n = len(sentences())
    row = {"threads": args.threads, "sentences": n, "tokens": tokens,
           **{f"{k}_sentences_per_s": round(v, 1) for k, v in med.items()},
           "speedup": round(med["attn"] / med["sentence-transformers"], 2),
           "attn_gflops": round(flops * med["attn"] / n / 1e9, 1)}
    print(f"load after: {os.getloadavg()[0]:.2f}")
    print(json.dumps(row))


if __name__ == "__main__":
    main()
