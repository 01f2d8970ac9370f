"""The real OpenAI Python client (PyPI `openai`) against `attn serve`.

    python tools/serve/check_openai_client.py --url http://127.0.0.1:8080 \
        --api-key KEY --attn target/release/attn --model-dir DIR [--embeddings]

Checks chat and completions, streamed and not, with n choices,
logit_bias and echo; usage equal to the tokenizer's counts (POST /tokenize, and `attn chat --render` for the chat
prompt); models; embeddings in the client's default base64 encoding and as
floats; and that errors arrive as the client's typed exceptions. Exits
non-zero on the first failure.
"""

import argparse
import json
import subprocess
import sys
import urllib.request

import openai


def post(url, key, path, body):
    req = urllib.request.Request(url + path, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json", "Authorization": "Bearer " + key})
    with urllib.request.urlopen(req) as r:
        return json.load(r)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--api-key", required=True)
    ap.add_argument("--attn", required=True, help="the attn binary, for `attn chat --render`")
    ap.add_argument("--model-dir", required=True)
    ap.add_argument("--embeddings", action="store_true", help="the server has --embedding-model")
    a = ap.parse_args()
    client = openai.OpenAI(base_url=a.url + "/v1", api_key=a.api_key, max_retries=0)
    checks = 0

    models = [m.id for m in client.models.list().data]
    assert models, models
    model = models[0]
    checks += 1

    # Chat, whole: prompt_tokens is the token count of the rendered template.
    messages = [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "What is 2 + 3?"}]
    rendered = subprocess.run([a.attn, "chat", "--model", a.model_dir, "--render"], input=json.dumps(messages),
                              capture_output=True, text=True, check=True).stdout
    want_prompt = post(a.url, a.api_key, "/tokenize", {"content": rendered})["count"]
    r = client.chat.completions.create(model=model, messages=messages, max_tokens=16, temperature=0)
    assert r.object == "chat.completion", r
    assert r.choices[0].message.role == "assistant"
    assert r.choices[0].finish_reason in ("stop", "length"), r.choices[0].finish_reason
    assert r.usage.prompt_tokens == want_prompt, (r.usage, want_prompt)
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    whole = r.choices[0].message.content
    checks += 1

    # Chat, streamed with usage: the same text, the same counts.
    stream = client.chat.completions.create(model=model, messages=messages, max_tokens=16, temperature=0, stream=True,
                                            stream_options={"include_usage": True})
    parts, usage, finish = [], None, None
    for chunk in stream:
        if chunk.usage:
            usage = chunk.usage
        for c in chunk.choices:
            if c.delta.content:
                parts.append(c.delta.content)
            if c.finish_reason:
                finish = c.finish_reason
    assert "".join(parts) == whole, ("".join(parts), whole)
    assert usage.prompt_tokens == r.usage.prompt_tokens and usage.completion_tokens == r.usage.completion_tokens, usage
    assert finish == r.choices[0].finish_reason
    checks += 1

    # Completions with logprobs: one entry per generated token, the count exact.
    prompt = "ROMEO: "
    want_prompt = post(a.url, a.api_key, "/tokenize", {"content": prompt, "add_special": True})["count"]
    r = client.completions.create(model=model, prompt=prompt, max_tokens=12, temperature=0, logprobs=2,
                                  extra_body={"ignore_eos": True})
    assert r.object == "text_completion"
    assert r.usage.prompt_tokens == want_prompt, (r.usage, want_prompt)
    assert r.usage.completion_tokens == 12 == len(r.choices[0].logprobs.tokens), r.usage
    assert r.choices[0].finish_reason == "length"
    text = "".join(chunk.choices[0].text for chunk in client.completions.create(
        model=model, prompt=prompt, max_tokens=12, temperature=0, stream=True, extra_body={"ignore_eos": True}) if chunk.choices)
    assert text == r.choices[0].text, (text, r.choices[0].text)
    checks += 1

    # Chat logprobs in OpenAI's shape.
    r = client.chat.completions.create(model=model, messages=messages, max_tokens=5, temperature=0, logprobs=True, top_logprobs=2)
    lp = r.choices[0].logprobs.content
    assert len(lp) == r.usage.completion_tokens <= 5 and len(lp[0].top_logprobs) == 2, lp
    assert lp[0].top_logprobs[0].logprob == lp[0].logprob and lp[0].logprob <= 0, lp[0]
    checks += 1

    # n choices through the client: indexed, each the single request of its
    # seed (the request's seed plus the index), streamed alike, usage summed.
    kw = dict(model=model, messages=messages, max_tokens=6, temperature=1.0)
    r = client.chat.completions.create(n=3, seed=3, **kw)
    singles = [client.chat.completions.create(seed=3 + i, **kw) for i in range(3)]
    assert [c.index for c in r.choices] == [0, 1, 2], r.choices
    assert [c.message.content for c in r.choices] == [s.choices[0].message.content for s in singles], (r.choices, singles)
    assert r.usage.completion_tokens == sum(s.usage.completion_tokens for s in singles), r.usage
    parts = ["", "", ""]
    for chunk in client.chat.completions.create(n=3, seed=3, stream=True, **kw):
        for c in chunk.choices:
            parts[c.index] += c.delta.content or ""
    assert parts == [c.message.content for c in r.choices], parts
    checks += 1

    # echo with max_tokens 0 (how evaluation harnesses score a text): the
    # prompt back, each token after the first with its log probability.
    r = client.completions.create(model=model, prompt=prompt, max_tokens=0, echo=True, logprobs=1)
    lp = r.choices[0].logprobs
    assert r.choices[0].text == prompt and r.usage.completion_tokens == 0, r
    assert len(lp.tokens) == r.usage.prompt_tokens and lp.token_logprobs[0] is None, lp
    assert all(x <= 0 for x in lp.token_logprobs[1:]), lp.token_logprobs
    checks += 1

    # logit_bias: +100 on one token and greedy decoding writes only it.
    seven = post(a.url, a.api_key, "/tokenize", {"content": "7"})["tokens"]
    assert len(seven) == 1, seven
    r = client.completions.create(model=model, prompt=prompt, max_tokens=4, temperature=0, logit_bias={str(seven[0]): 100},
                                  extra_body={"ignore_eos": True})
    assert r.choices[0].text == "7777", r.choices[0].text
    checks += 1

    if a.embeddings:
        texts = ["A man is eating food.", "Someone is having a meal."]
        e64 = client.embeddings.create(model=model, input=texts)  # the client asks for base64
        ef = client.embeddings.create(model=model, input=texts, encoding_format="float")
        assert len(e64.data) == 2 and len(e64.data[0].embedding) == len(ef.data[0].embedding) > 0
        diff = max(abs(x - y) for d1, d2 in zip(e64.data, ef.data) for x, y in zip(d1.embedding, d2.embedding))
        assert diff == 0.0, diff
        assert e64.usage.prompt_tokens > 0
        checks += 1

    # Errors as the client's typed exceptions.
    def raises(exc, f):
        try:
            f()
        except exc as e:
            return e
        raise AssertionError(f"expected {exc.__name__}")

    e = raises(openai.BadRequestError, lambda: client.completions.create(model=model, prompt=prompt, max_tokens=10 ** 6))
    assert "max_tokens" in str(e) and e.body["code"] == "context_length_exceeded", e
    raises(openai.BadRequestError, lambda: client.chat.completions.create(model=model, messages=messages, temperature=5))
    bad = openai.OpenAI(base_url=a.url + "/v1", api_key="wrong-key", max_retries=0)
    raises(openai.AuthenticationError, lambda: bad.models.list())
    raises(openai.NotFoundError, lambda: client.get("/nothing", cast_to=object))
    e = raises(openai.APIStatusError, lambda: client.completions.create(model=model, prompt="x" * (3 << 20), max_tokens=1))
    assert e.status_code == 413, e.status_code
    checks += 1
    print(f"openai {openai.__version__}: {checks} checks passed against {a.url} (model {model})")


if __name__ == "__main__":
    sys.exit(main())
