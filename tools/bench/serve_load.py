"""Load generator for `attn serve` (the issue's load bar).

    python tools/bench/serve_load.py --url http://127.0.0.1:8080 [--clients 32] [--tokens 128] [--rounds 1]

1. Each of the `clients` requests (different prompts, temperature 0) runs
   alone, one after another: the reference text of each, and single-stream
   decode speed.
2. All of them at once, streaming: every response must be complete (a
   `[DONE]`, `tokens` completion tokens) and identical to the same request
   run alone.
Prints one JSON object: single-stream decode tok/s (median, client side),
aggregate tok/s under load (all completion tokens / wall time, prefill,
queueing and HTTP included) and its ratio to one stream; the server's own
decode rate (/metrics: tokens from batched steps / seconds in them) alone
and under load, and its ratio; p50 / p99 time to first token.
Needs httpx (installed with PyPI `openai`, as httpx2 since openai 3).
"""

import argparse
import asyncio
import json
import statistics
import sys
import time

try:
    import httpx
except ImportError:  # openai 3.x ships it as httpx2
    import httpx2 as httpx

PROMPTS = [
    "First Citizen:", "ROMEO:", "To be, or not to be", "Once upon a time", "The quick brown fox",
    "In the beginning", "It was a dark and stormy night", "Call me Ishmael.", "All happy families",
    "Friends, Romans, countrymen,", "Now is the winter of our discontent", "Shall I compare thee",
]


def prompt(i):
    return f"{PROMPTS[i % len(PROMPTS)]} ({i})"


async def stream_one(client, url, i, tokens):
    """One streaming completion: (text, completion_tokens, ttft_s, first_to_last_s, done)."""
    body = {"prompt": prompt(i), "max_tokens": tokens, "temperature": 0, "stream": True,
            "stream_options": {"include_usage": True}, "ignore_eos": True}
    t0 = time.perf_counter()
    first = last = None
    parts, usage, done = [], None, False
    async with client.stream("POST", url + "/v1/completions", json=body, timeout=None) as r:
        r.raise_for_status()
        async for line in r.aiter_lines():
            if not line.startswith("data: "):
                continue
            data = line[6:]
            if data == "[DONE]":
                done = True
                continue
            j = json.loads(data)
            if j.get("usage"):
                usage = j["usage"]
            for c in j["choices"]:
                if c.get("text"):
                    now = time.perf_counter()
                    first = first if first is not None else now
                    last = now
                    parts.append(c["text"])
    n = usage["completion_tokens"] if usage else 0
    return "".join(parts), n, (first or t0) - t0, (last or t0) - (first or t0), done


def metrics(resp):
    """The unlabelled samples of a /metrics response, by name."""
    out = {}
    for line in resp.text.splitlines():
        parts = line.split()
        if len(parts) == 2 and not line.startswith("#") and "{" not in parts[0]:
            out[parts[0]] = float(parts[1])
    return out


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--tokens", type=int, default=128)
    a = ap.parse_args()
    limits = httpx.Limits(max_connections=a.clients + 4, max_keepalive_connections=a.clients + 4)
    async with httpx.AsyncClient(limits=limits) as client:
        m0 = metrics(await client.get(a.url + "/metrics"))
        alone, single = [], []
        for i in range(a.clients):
            text, n, ttft, span, done = await stream_one(client, a.url, i, a.tokens)
            assert done and n == a.tokens, (i, n, done)
            alone.append(text)
            single.append((n - 1) / span)
        m1 = metrics(await client.get(a.url + "/metrics"))
        t0 = time.perf_counter()
        results = await asyncio.gather(*(stream_one(client, a.url, i, a.tokens) for i in range(a.clients)))
        wall = time.perf_counter() - t0
        m2 = metrics(await client.get(a.url + "/metrics"))
    complete = sum(1 for (_, n, _, _, done) in results if done and n == a.tokens)
    identical = sum(1 for i, (text, *_rest) in enumerate(results) if text == alone[i])
    ttfts = sorted(r[2] for r in results)
    total = sum(r[1] for r in results)
    single_tps = statistics.median(single)
    # The server's own decode rate: tokens from batched steps over the time
    # spent in them (prefill, queueing and HTTP excluded), alone vs together.
    rate = lambda x, y: (y["attn_decode_tokens_total"] - x["attn_decode_tokens_total"]) / (y["attn_decode_seconds_total"] - x["attn_decode_seconds_total"])
    server_single, server_together = rate(m0, m1), rate(m1, m2)
    out = {
        "clients": a.clients, "tokens": a.tokens,
        "complete": complete, "identical_to_alone": identical,
        "single_stream_decode_tok_s": round(single_tps, 2),
        "aggregate_tok_s": round(total / wall, 2),
        "aggregate_vs_single": round(total / wall / single_tps, 2),
        "wall_s": round(wall, 2),
        "server_decode_tok_s_single": round(server_single, 2),
        "server_decode_tok_s_together": round(server_together, 2),
        "server_decode_ratio": round(server_together / server_single, 2),
        "ttft_p50_s": round(ttfts[len(ttfts) // 2], 3),
        "ttft_p99_s": round(ttfts[min(len(ttfts) - 1, int(0.99 * len(ttfts)))], 3),
        "cancelled": m2["attn_requests_cancelled_total"],
    }
    print(json.dumps(out))
    return 0 if complete == identical == a.clients else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
