"""attn vs Hugging Face transformers generate(), batch 1, greedy, same weights.

Writes a random-init GPT-2 124M with save_pretrained (once, into
.cache/gpt2-124m-random), then alternates `attn bench generate --model` on
that folder and transformers' generate() (32-token prompt, 256 new tokens,
2 threads), and prints the medians and the ratio.

  .cache/venv-ref/bin/python tools/bench/compare_generate.py [--rounds 3]
"""
import argparse, json, os, statistics, subprocess, time

import torch
from transformers import GPT2Config, GPT2LMHeadModel

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DIR = os.path.join(ROOT, ".cache", "gpt2-124m-random")


def hf_run(model, prompt_len, new):
    torch.manual_seed(0)
    ids = torch.randint(0, model.config.vocab_size, (1, prompt_len))
    t0 = time.perf_counter()
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=new, min_new_tokens=new, do_sample=False,
                             attention_mask=torch.ones_like(ids), pad_token_id=0)
    dt = time.perf_counter() - t0
    assert out.shape[1] == prompt_len + new
    return new / dt


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    if not os.path.exists(os.path.join(DIR, "model.safetensors")):
        torch.manual_seed(0)
        GPT2LMHeadModel(GPT2Config()).save_pretrained(DIR, safe_serialization=True)
    model = GPT2LMHeadModel.from_pretrained(DIR).eval()
    subprocess.run(["cargo", "build", "--release", "-q", "--bin", "attn"], cwd=ROOT, check=True)
    print(json.dumps({"load_before": open("/proc/loadavg").read().split()[:3]}), flush=True)
    hf_run(model, 32, 8)  # warm-up
    ours, theirs, frac = [], [], []
    for _ in range(a.rounds):
        r = json.loads(subprocess.run(["target/release/attn", "bench", "generate", "--model", DIR, "--prompt-len", "32", "--new-tokens", "256",
                                       "--threads", str(a.threads)], cwd=ROOT, check=True, capture_output=True, text=True).stdout.splitlines()[-1])
        ours.append(r["tok_per_s"])
        frac.append(r["fraction_of_bound"])
        theirs.append(hf_run(model, 32, 256))
    print(json.dumps({"model": "gpt2-124m (random init, f32)", "threads": a.threads, "prompt_len": 32, "new_tokens": 256,
                      "attn_tok_per_s": round(statistics.median(ours), 2), "transformers_tok_per_s": round(statistics.median(theirs), 2),
                      "speedup": round(statistics.median(ours) / statistics.median(theirs), 2),
                      "attn_decode_fraction_of_bandwidth_bound": round(statistics.median(frac), 3),
                      "peer": f"transformers {__import__('transformers').__version__} generate(), torch {torch.__version__}"}), flush=True)
    print(json.dumps({"load_after": open("/proc/loadavg").read().split()[:3]}))


if __name__ == "__main__":
    main()
