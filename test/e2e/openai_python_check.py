"""The official OpenAI Python SDK against a running thaw edge (run by the e2e and edge tests).

usage: openai_python_check.py BASE_URL MODEL API_KEY CHECKS
CHECKS is a comma-separated subset of: chat, stream, completions, errors, auth, ratelimit.
Prints one JSON object with what it saw; exits non-zero on any failure.
"""

from __future__ import annotations

import json
import sys

import openai


def main() -> None:
    base_url, model, key, checks = sys.argv[1], sys.argv[2], sys.argv[3], set(sys.argv[4].split(","))
    client = openai.OpenAI(base_url=base_url, api_key=key, max_retries=0)
    out: dict[str, object] = {"version": openai.__version__}
    if "chat" in checks:
        r = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}], max_tokens=8, seed=1)
        out["chat"] = {"object": r.object, "content_type": type(r.choices[0].message.content).__name__, "finish": r.choices[0].finish_reason, "usage": r.usage.completion_tokens, "request_id": bool(r._request_id)}
    if "stream" in checks:
        chunks = list(client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}], max_tokens=6, stream=True, stream_options={"include_usage": True}))
        out["stream"] = {
            "first_role": chunks[0].choices[0].delta.role,
            "finish": [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason],
            "usage_last": chunks[-1].usage.completion_tokens if chunks[-1].usage else None,
            "usage_choices": len(chunks[-1].choices),
        }
    if "completions" in checks:
        r = client.completions.create(model=model, prompt=["a", "b"], max_tokens=3, n=2, logprobs=2)
        out["completions"] = {"indexes": [c.index for c in r.choices], "logprobs": len(r.choices[0].logprobs.tokens), "prompt_tokens": r.usage.prompt_tokens}
        t = client.completions.create(model=model, prompt=[1, 2, 3], max_tokens=2, extra_body={"top_k": 5, "ignore_eos": True})
        out["token_prompt"] = t.choices[0].finish_reason
    if "errors" in checks:
        errors = {}
        try:
            client.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "x"}])
        except openai.NotFoundError as e:
            errors["not_found"] = e.code
        try:
            client.chat.completions.create(model=model, messages=[{"role": "user", "content": "x"}], temperature=5)
        except openai.BadRequestError as e:
            errors["bad_request"] = e.param
        try:
            client.chat.completions.create(model=model, messages=[{"role": "user", "content": "x" * 5000}], max_tokens=1)
        except openai.BadRequestError as e:
            errors["context_length"] = e.code
        out["errors"] = errors
    if "auth" in checks:
        try:
            openai.OpenAI(base_url=base_url, api_key="sk-wrong", max_retries=0).models.list()
            out["auth"] = None
        except openai.AuthenticationError as e:
            out["auth"] = e.code
    if "ratelimit" in checks:
        try:
            client.chat.completions.create(model=model, messages=[{"role": "user", "content": "x"}])
            out["ratelimit"] = None
        except openai.RateLimitError as e:
            out["ratelimit"] = {"code": e.code, "retry_after": e.response.headers.get("retry-after")}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
