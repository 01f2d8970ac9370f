"""attn vs PyTorch eager, training steps, side by side on one machine.

Runs `attn bench train` and `tools/bench/torch_gpt.py bench` in alternating
rounds (so drift in the machine's speed hits both alike) on the same preset,
shapes and thread count, then prints the medians and the ratio as JSON lines.

  .cache/venv-ref/bin/python tools/bench/compare_train.py [--rounds 3] [--threads 2] [--dtype bf16]

--peer-mkl both also runs the peer with MKL's AVX-512 kernels forced on a
non-Intel CPU (tools/bench/mkl_full_path.sh), in the same rounds, and adds
its time and ratio ("pytorch_full_mkl_ms_per_step", "speedup_full_mkl").

--dtype bf16 runs attn's bf16 products (`--dtype bf16`) against torch.autocast
in bf16, both with f32 master weights and AdamW.
"""
import argparse, json, os, statistics, subprocess, sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ATTN = os.environ.get("ATTN", "target/release/attn")
CASES = [  # (preset, batch, seq_len, attn steps, torch steps)
    ("baby", 12, 64, 30, 30),
    ("llama-baby", 12, 64, 30, 30),
    ("gpt2-124m", 4, 64, 4, 4),
    ("gpt2-124m", 1, 1024, 2, 2),  # long context: torch's fused SDPA against attn's attention
]


def run(cmd, env=None):
    out = subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True, text=True, env=env).stdout
    return json.loads(out.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--only", help="run one preset")
    ap.add_argument("--seq-len", type=int, help="run the cases of this sequence length only")
    ap.add_argument("--dtype", choices=["f32", "bf16"], default="f32")
    ap.add_argument("--peer-mkl", choices=["shipped", "both"], default="shipped",
                    help="both: the peer also with MKL's AVX-512 kernels forced on a non-Intel CPU")
    a = ap.parse_args()
    full_env = None
    if a.peer_mkl == "both":
        lib = subprocess.run(["tools/bench/mkl_full_path.sh"], cwd=ROOT, check=True, capture_output=True, text=True).stdout.strip()
        full_env = {**os.environ, "LD_PRELOAD": lib} if lib else None  # empty on an Intel CPU: nothing to force
    if "ATTN" not in os.environ:  # ATTN=binary: another build (tools/bench/as_avx2.sh)
        subprocess.run(["cargo", "build", "--release", "-q", "--bin", "attn"], cwd=ROOT, check=True)
    print(json.dumps({"load_before": open("/proc/loadavg").read().split()[:3], "threads": a.threads}), flush=True)
    for preset, b, t, steps, tsteps in CASES:
        if (a.only and preset != a.only) or (a.seq_len and t != a.seq_len):
            continue
        ours, theirs, full = [], [], []
        for _ in range(a.rounds):
            # baby uses the 65-symbol vocabulary of the char-level Shakespeare preset.
            extra = ["--vocab", "65"] if preset in ("baby", "llama-baby") else []
            ours.append(run([ATTN, "bench", "train", "--preset", preset, "--batch-size", str(b), "--seq-len", str(t),
                             "--steps", str(steps), "--threads", str(a.threads), "--dtype", a.dtype] + extra))
            peer = [sys.executable, "tools/bench/torch_gpt.py", "bench", "--preset", preset, "--batch-size", str(b),
                    "--seq-len", str(t), "--steps", str(tsteps), "--threads", str(a.threads), "--dtype", a.dtype]
            theirs.append(run(peer))
            if full_env:
                full.append(run(peer, full_env))
        med = lambda rs, k: statistics.median(r[k] for r in rs)
        ms_a, ms_t = med(ours, "ms_per_step"), med(theirs, "ms_per_step")
        mkl = {}
        if full:
            ms_f = med(full, "ms_per_step")
            mkl = {"pytorch_full_mkl_ms_per_step": round(ms_f, 1), "speedup_full_mkl": round(ms_f / ms_a, 2)}
        print(json.dumps({
            "preset": preset, "batch_size": b, "seq_len": t, "threads": a.threads, "rounds": a.rounds, "dtype": a.dtype,
            "bf16_path": ours[0].get("bf16_path"),
            "attn_ms_per_step": round(ms_a, 1), "pytorch_ms_per_step": round(ms_t, 1),
            "attn_tok_per_s": round(b * t / ms_a * 1e3, 1), "pytorch_tok_per_s": round(b * t / ms_t * 1e3, 1),
            "speedup": round(ms_t / ms_a, 2),
            "attn_gflops": round(med(ours, "gflops"), 1), "gemm_peak_gflops": round(med(ours, "peak_gflops"), 1),
            "attn_mfu": round(med(ours, "mfu"), 3),
            # The cores' own multiply-add (or bf16 dot) rate, and each side's share of it:
            # the same FLOPs a step, so the peer's share is attn's times ms_a / ms_t.
            **core_shares(ours, med, ms_a, ms_t),
            "attn_peak_rss_mb": round(max(r["peak_rss_mb"] for r in ours)), "pytorch_peak_rss_mb": round(max(r["peak_rss_mb"] for r in theirs)),
            "peer": theirs[0]["peer"], **mkl,
            # Per round: ~70 ns with both vCPUs in one core complex, ~320 when placed apart (docs/PERFORMANCE.md).
            "core_round_trip_ns": [round(r["core_round_trip_ns"]) if r.get("core_round_trip_ns") else None for r in ours],
        }), flush=True)
    print(json.dumps({"load_after": open("/proc/loadavg").read().split()[:3]}))


def core_shares(ours, med, ms_a, ms_t):
    """core_peak_gflops and both sides' share of it, where attn probed one."""
    if not all(r.get("of_core_peak") for r in ours):
        return {}
    share = med(ours, "of_core_peak")
    return {"core_peak_gflops": round(med(ours, "core_peak_gflops"), 1),
            "attn_of_core_peak": round(share, 3), "pytorch_of_core_peak": round(share * ms_a / ms_t, 3)}


if __name__ == "__main__":
    main()
