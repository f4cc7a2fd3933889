"""Checks `orchestra serve` with the official `openai` Python client.

Run by tests/serve_openai.rs against a server it started on 127.0.0.1:
    python3 tests/openai/client_checks.py synthetic http://127.0.0.1:PORT/v1 '<expected json>'
    python3 tests/openai/client_checks.py real http://127.0.0.1:PORT/v1 '{}'
Every check asserts; the first failure exits non-zero with the reason.
"""

import base64
import json
import struct
import sys

import openai
from openai import OpenAI

MODE, BASE_URL, EXPECTED = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
client = OpenAI(base_url=BASE_URL, api_key="unused", max_retries=0, timeout=600)


def check(name, fn):
    fn()
    print(f"ok  {name}", flush=True)


def expect_error(kind, status, fn):
    try:
        fn()
    except kind as e:
        assert e.status_code == status, (e.status_code, e)
        assert e.body and "message" in e.body, e.body
        return
    raise AssertionError(f"expected {kind.__name__}")


def non_streaming():
    r = client.chat.completions.create(
        model="coltrane", messages=[{"role": "user", "content": "hello"}]
    )
    assert r.object == "chat.completion"
    assert r.choices[0].message.content == EXPECTED["coltrane"], r.choices[0].message.content
    assert r.choices[0].finish_reason == "stop"
    assert r.usage.prompt_tokens > 0 and r.usage.completion_tokens > 0
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


def streaming():
    stream = client.chat.completions.create(
        model="monk",
        messages=[{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    text, finish, usage, pieces = "", None, None, 0
    for chunk in stream:
        if chunk.usage:
            usage = chunk.usage
        for c in chunk.choices:
            if c.delta.content:
                text += c.delta.content
                pieces += 1
            if c.finish_reason:
                finish = c.finish_reason
    assert text == EXPECTED["monk"], text
    assert pieces > 3, pieces
    assert finish == "stop"
    assert usage and usage.completion_tokens > 0


def arrangement():
    raw = client.chat.completions.with_raw_response.create(
        model="orchestra",
        messages=[{"role": "user", "content": "write a function that reverses a string"}],
    )
    assert raw.headers["x-orchestra-section"] == "code"
    r = raw.parse()
    assert r.choices[0].message.content == EXPECTED["coltrane"]
    extra = r.model_extra["orchestra"]
    assert extra["soloist"] == "coltrane" and extra["section"] == "code", extra


def json_schema():
    schema = {
        "type": "object",
        # Bounded, so that any model (even the synthetic ones) closes the object in time.
        "properties": {
            "name": {"type": "string", "maxLength": 24},
            "year": {"type": "integer", "minimum": 1900, "maximum": 2030},
        },
        "required": ["name", "year"],
        "additionalProperties": False,
    }
    r = client.chat.completions.create(
        model=EXPECTED.get("json_model", "ella"),
        messages=[{"role": "user", "content": "Name a jazz album and its year, as JSON."}],
        response_format={"type": "json_schema", "json_schema": {"name": "album", "schema": schema}},
        max_tokens=200,
        temperature=0,
    )
    assert r.choices[0].finish_reason == "stop", r.choices[0]
    data = json.loads(r.choices[0].message.content)
    assert isinstance(data["name"], str) and len(data["name"]) <= 24, data
    assert isinstance(data["year"], int) and 1900 <= data["year"] <= 2030, data
    assert set(data) == {"name", "year"}, data


def json_object():
    r = client.chat.completions.create(
        model=EXPECTED.get("json_model", "ella"),
        messages=[{"role": "user", "content": "Describe a saxophone as a JSON object."}],
        response_format={"type": "json_object"},
        max_tokens=120,
        temperature=0,
    )
    assert isinstance(json.loads(r.choices[0].message.content), dict)


def embeddings():
    r = client.embeddings.create(model="duke", input=["swing", "bebop"])  # base64 by default
    assert len(r.data) == 2 and len(r.data[0].embedding) > 8
    norm = sum(x * x for x in r.data[0].embedding) ** 0.5
    assert abs(norm - 1.0) < 1e-3, norm
    f = client.embeddings.create(model="duke", input="swing", encoding_format="float")
    assert abs(f.data[0].embedding[0] - r.data[0].embedding[0]) < 1e-6
    assert r.usage.prompt_tokens > 0


def legacy_completions():
    r = client.completions.create(model="mingus", prompt="review", max_tokens=4)
    assert r.choices[0].finish_reason == "length" and r.usage.completion_tokens == 4


def models():
    ids = [m.id for m in client.models.list()]
    for want in ["orchestra", "orchestra/code", "coltrane", "duke"]:
        assert want in ids, ids


def errors():
    expect_error(openai.NotFoundError, 404, lambda: client.chat.completions.create(
        model="nobody", messages=[{"role": "user", "content": "hi"}]))
    expect_error(openai.BadRequestError, 400, lambda: client.chat.completions.create(
        model="coltrane", messages=[]))
    expect_error(openai.BadRequestError, 400, lambda: client.embeddings.create(
        model="coltrane", input="hi"))
    keyed = OpenAI(base_url=EXPECTED["keyed_url"], api_key="wrong", max_retries=0)
    expect_error(openai.AuthenticationError, 401, lambda: keyed.models.list())
    good = OpenAI(base_url=EXPECTED["keyed_url"], api_key="sesame", max_retries=0)
    assert any(m.id == "orchestra" for m in good.models.list())


def real():
    r = client.chat.completions.create(
        model="qwen",
        messages=[{"role": "user", "content": "What is the capital of France? Answer in one word."}],
        temperature=0,
        max_tokens=16,
    )
    assert "paris" in r.choices[0].message.content.lower(), r.choices[0].message.content
    stream = client.chat.completions.create(
        model="qwen",
        messages=[{"role": "user", "content": "Count from 1 to 5, separated by commas."}],
        temperature=0,
        max_tokens=32,
        stream=True,
    )
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert "1" in text and "5" in text, text
    json_schema()


WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "description": "the city name"}},
            "required": ["city"],
        },
    },
}
ASK = [{"role": "user", "content": "What is the weather like in Paris today?"}]


def valid_weather_call(call):
    assert call.type == "function" and call.function.name == "get_weather", call
    args = json.loads(call.function.arguments)
    assert isinstance(args, dict) and isinstance(args.get("city"), str), args
    assert set(args) <= {"city"}, args
    return args


def tool_call():
    r = client.chat.completions.create(model="qwen", messages=ASK, tools=[WEATHER], temperature=0)
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls", choice
    calls = choice.message.tool_calls
    assert calls and calls[0].id, choice.message
    args = valid_weather_call(calls[0])
    assert "paris" in args["city"].lower(), args
    # The tool's result goes back through the template; the model answers with it. (With
    # the tools still offered, this 0.5B model only ever calls the tool again, so the
    # follow-up turns them off, as agents do after a tool round.)
    follow = client.chat.completions.create(
        model="qwen",
        temperature=0,
        tools=[WEATHER],
        tool_choice="none",
        messages=ASK
        + [
            {"role": "assistant", "content": None, "tool_calls": [c.model_dump() for c in calls]},
            {"role": "tool", "tool_call_id": calls[0].id, "content": json.dumps({"city": "Paris", "temperature_c": 17, "sky": "sunny"})},
        ],
    )
    text = follow.choices[0].message.content or ""
    assert follow.choices[0].finish_reason == "stop", follow.choices[0]
    assert "17" in text or "sunny" in text.lower(), text


def tool_call_streamed():
    stream = client.chat.completions.create(
        model="qwen", messages=ASK, tools=[WEATHER], temperature=0, stream=True
    )
    name, args, finish, ids = "", "", None, set()
    for chunk in stream:
        for c in chunk.choices:
            for d in c.delta.tool_calls or []:
                assert d.index == 0
                if d.id:
                    ids.add(d.id)
                if d.function and d.function.name:
                    name += d.function.name
                if d.function and d.function.arguments:
                    args += d.function.arguments
            if c.finish_reason:
                finish = c.finish_reason
    assert finish == "tool_calls" and name == "get_weather" and len(ids) == 1, (finish, name, ids)
    assert "paris" in json.loads(args)["city"].lower(), args


def tool_required():
    r = client.chat.completions.create(
        model="qwen",
        messages=[{"role": "user", "content": "Hello there! How are you?"}],
        tools=[WEATHER],
        tool_choice="required",
        temperature=0,
    )
    assert r.choices[0].finish_reason == "tool_calls", r.choices[0]
    valid_weather_call(r.choices[0].message.tool_calls[0])


def tool_sampled_runs():
    for seed in range(1, 21):
        r = client.chat.completions.create(
            model="qwen", messages=ASK, tools=[WEATHER], temperature=0.8, seed=seed, max_tokens=60
        )
        choice = r.choices[0]
        for call in choice.message.tool_calls or []:
            valid_weather_call(call)
        if choice.finish_reason == "tool_calls":
            assert choice.message.tool_calls, choice


if MODE == "tools":
    for name, fn in [
        ("a tool call, then its result answered", tool_call),
        ("a streamed tool call", tool_call_streamed),
        ("tool_choice required", tool_required),
        ("20 sampled runs, every call schema-valid", tool_sampled_runs),
    ]:
        check(name, fn)
    sys.exit(0)

if MODE == "synthetic":
    for name, fn in [
        ("models", models),
        ("non-streaming chat", non_streaming),
        ("streaming chat with usage", streaming),
        ("the arrangement with its trace", arrangement),
        ("response_format json_schema", json_schema),
        ("response_format json_object", json_object),
        ("embeddings, base64 and float", embeddings),
        ("legacy completions", legacy_completions),
        ("error codes", errors),
    ]:
        check(name, fn)
elif MODE == "real":
    check("a real model through the server", real)
else:
    sys.exit(f"unknown mode {MODE}")
