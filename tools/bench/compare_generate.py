"""attn vs Hugging Face transformers generate(), batch 1, greedy, same weights,
for each weight dtype: attn f32 / bf16 / int8 (groups of 64, the default) / int8:32
(`--dtype`; in runs made before 2026-12-07 plain int8 was groups of 32), transformers f32
and bf16 (the model cast with .to(torch.bfloat16)).

Writes a random-init GPT-2 124M with save_pretrained (once, into
.cache/gpt2-124m-random), then alternates rounds: every attn dtype through
`attn bench generate --model`, and transformers' generate() in a child
process per dtype (so each peak RSS is its own). 32-token prompt, 256 new
tokens, 2 threads. Prints the medians, the ratios and the peak RSS.

  .cache/venv-ref5/bin/python tools/bench/compare_generate.py [--rounds 3]
"""
import argparse, json, os, resource, statistics, subprocess, sys, time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ATTN = os.environ.get("ATTN", "target/release/attn")
DIR = os.path.join(ROOT, ".cache", "gpt2-124m-random")


def hf_child(dtype, threads, prompt_len, new):
    import torch
    from transformers import GPT2LMHeadModel
    torch.set_num_threads(threads)
    model = GPT2LMHeadModel.from_pretrained(DIR, dtype=torch.float32).eval()
    if dtype == "bf16":
        model = model.to(torch.bfloat16)
    torch.manual_seed(0)
    ids = torch.randint(0, model.config.vocab_size, (1, prompt_len))
    kw = dict(do_sample=False, attention_mask=torch.ones_like(ids), pad_token_id=0)
    with torch.no_grad():
        model.generate(ids, max_new_tokens=8, min_new_tokens=8, **kw)  # warm-up
        t0 = time.perf_counter()
        out = model.generate(ids, max_new_tokens=new, min_new_tokens=new, **kw)
    dt = time.perf_counter() - t0
    assert out.shape[1] == prompt_len + new
    print(json.dumps({"tok_per_s": new / dt, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      "peer": f"transformers {__import__('transformers').__version__} generate(), torch {torch.__version__}"}))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--hf-child", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.hf_child:
        return hf_child(a.hf_child, a.threads, 32, 256)
    if not os.path.exists(os.path.join(DIR, "model.safetensors")):
        import torch
        from transformers import GPT2Config, GPT2LMHeadModel
        torch.manual_seed(0)
        GPT2LMHeadModel(GPT2Config()).save_pretrained(DIR, safe_serialization=True)
    if "ATTN" not in os.environ:  # ATTN=binary: another build (tools/bench/as_avx2.sh)
        subprocess.run(["cargo", "build", "--release", "-q", "--bin", "attn"], cwd=ROOT, check=True)
    flags = sorted({f for l in open("/proc/cpuinfo") if l.startswith("flags") for f in l.split()[2:] if f.startswith(("avx512_bf16", "avx512f", "avx2", "amx", "fma"))})
    print(json.dumps({"cpu_flags": flags, "load_before": open("/proc/loadavg").read().split()[:3]}), flush=True)
    runs = {k: [] for k in ["attn f32", "attn bf16", "attn int8", "attn int8:32", "transformers f32", "transformers bf16"]}
    rss, frac, peer = {}, [], ""
    for _ in range(a.rounds):
        for d in ["f32", "bf16", "int8", "int8:32"]:
            r = json.loads(subprocess.run([ATTN, "bench", "generate", "--model", DIR, "--dtype", d, "--prompt-len", "32", "--new-tokens", "256",
                                           "--threads", str(a.threads)], cwd=ROOT, check=True, capture_output=True, text=True).stdout.splitlines()[-1])
            runs[f"attn {d}"].append(r["tok_per_s"])
            rss[f"attn {d}"] = round(r["peak_rss_mb"])
            if d == "f32":
                frac.append(r["fraction_of_bound"])
        for d in ["f32", "bf16"]:
            r = json.loads(subprocess.run([sys.executable, __file__, "--hf-child", d, "--threads", str(a.threads)], check=True, capture_output=True, text=True).stdout.splitlines()[-1])
            runs[f"transformers {d}"].append(r["tok_per_s"])
            rss[f"transformers {d}"] = round(r["peak_rss_mb"])
            peer = r["peer"]
    med = {k: round(statistics.median(v), 2) for k, v in runs.items()}
    print(json.dumps({"model": "gpt2-124m (random init)", "threads": a.threads, "prompt_len": 32, "new_tokens": 256, "tok_per_s_median": med,
                      "attn_f32_vs_transformers_f32": round(med["attn f32"] / med["transformers f32"], 2),
                      "attn_bf16_vs_attn_f32": round(med["attn bf16"] / med["attn f32"], 2),
                      "attn_bf16_vs_transformers_bf16": round(med["attn bf16"] / med["transformers bf16"], 2),
                      "attn_int8_vs_attn_f32": round(med["attn int8"] / med["attn f32"], 2),
                      "attn_int8_32_vs_attn_f32": round(med["attn int8:32"] / med["attn f32"], 2),
                      "per_round": runs,
                      "attn_f32_fraction_of_bandwidth_bound": round(statistics.median(frac), 3),
                      "peak_rss_mb": rss, "rounds": a.rounds, "peer": peer}), flush=True)
    print(json.dumps({"load_after": open("/proc/loadavg").read().split()[:3]}))


if __name__ == "__main__":
    main()
