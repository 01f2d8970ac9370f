"""The bars of issues 12 and 13 as one Markdown table, from the logs that
tools/bench/bars.sh writes into DIR: bar, measured ratio (or fraction), met.

  python tools/bench/bars_table.py runs/bars-DATE
"""
import json
import statistics
import sys
from pathlib import Path


def lines(path):
    """The JSON objects among a log's lines (other lines are skipped)."""
    out = []
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                v = json.loads(line)
            except ValueError:
                continue
            if isinstance(v, dict):
                out.append(v)
    return out


def train(rows, preset, b, t):
    for r in rows:
        if (r.get("preset"), r.get("batch_size"), r.get("seq_len")) == (preset, b, t):
            return r["speedup"]
    return None


def translation(rows):
    """Medians of the side-by-side rounds: (train f32 ratio, beam-4 tok/s ratio)."""
    attn_f32, peer_f32, attn_tr, peer_tr = [], [], [], []
    for r in rows:
        peer = r.get("peer", "")
        if "ms_per_step" in r:
            if peer == "torch.nn eager f32":
                peer_f32.append(r["ms_per_step"])
            elif not peer and r.get("dtype", "f32") == "f32":
                attn_f32.append(r["ms_per_step"])
        elif "tok_per_s" in r:
            (peer_tr if peer.startswith("transformers") else attn_tr).append(r["tok_per_s"])
    med = lambda x: statistics.median(x) if x else None
    train_ratio = med(peer_f32) / med(attn_f32) if attn_f32 and peer_f32 else None
    tr_ratio = med(attn_tr) / med(peer_tr) if attn_tr and peer_tr else None
    return train_ratio, tr_ratio


def main(d):
    d = Path(d)
    f32, bf16 = lines(d / "train_f32.jsonl"), lines(d / "train_bf16.jsonl")
    gen = next((r for r in lines(d / "generate.jsonl") if "tok_per_s_median" in r), {})
    tb_train, tb_beam = translation(lines(d / "translation.jsonl"))
    bars = [
        ("12", "f32 training `baby` 12x64 / PyTorch eager", train(f32, "baby", 12, 64), 1.3),
        ("12", "f32 training gpt2-124m 4x64 / PyTorch eager", train(f32, "gpt2-124m", 4, 64), 1.3),
        ("12", "f32 training gpt2-124m 1x1024 / PyTorch eager (SDPA)", train(f32, "gpt2-124m", 1, 1024), 1.3),
        ("12", "bf16 training gpt2-124m 4x64 / autocast", train(bf16, "gpt2-124m", 4, 64), 1.5),
        ("12", "bf16 training gpt2-124m 1x1024 / autocast", train(bf16, "gpt2-124m", 1, 1024), 1.5),
        ("12", "generation f32, fraction of the read-bandwidth bound", gen.get("attn_f32_fraction_of_bandwidth_bound"), 0.9),
        ("12", "generation f32 / transformers f32", gen.get("attn_f32_vs_transformers_f32"), 1.1),
        ("12", "generation bf16 / attn f32", gen.get("attn_bf16_vs_attn_f32"), 1.8),
        ("12", "generation bf16 / transformers bf16", gen.get("attn_bf16_vs_transformers_bf16"), 1.5),
        ("12", "generation int8 / attn f32", gen.get("attn_int8_vs_attn_f32"), 3.0),
        ("13", "transformer-base training f32 / torch.nn peer", tb_train, 1.3),
        ("13", "beam-4 translation tok/s / transformers generate()", tb_beam, 1.5),
    ]
    print((d / "machine.txt").read_text().strip() if (d / "machine.txt").exists() else "")
    print()
    print("| issue | bar | measured | needed | met |")
    print("|---|---|---|---|---|")
    # bars.sh leaves the bf16 training bars out on a CPU without bf16
    # instructions (AMX or AVX512-BF16), where the issue does not ask for them.
    no_bf16 = "do not apply" in (d / "train_bf16.jsonl").read_text() if (d / "train_bf16.jsonl").exists() else False
    for issue, name, got, need in bars:
        missing = "does not apply (no bf16 instructions)" if no_bf16 and name.startswith("bf16 training") else "not run"
        shown = missing if got is None else f"{got:.3f}" if need < 1 else f"{got:.2f}x"
        met = "" if got is None else "yes" if got >= need else "**no**"
        print(f"| {issue} | {name} | {shown} | {need if need < 1 else f'{need}x'} | {met} |")


if __name__ == "__main__":
    main(sys.argv[1])
