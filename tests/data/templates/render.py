#!/usr/bin/env python3
"""Expected chat-template renderings for tests/templates.rs, made by Python's jinja2
(the reference implementation) in the environment Hugging Face `transformers` uses
for `apply_chat_template`: ImmutableSandboxedEnvironment with trim_blocks,
lstrip_blocks and loopcontrols, its `tojson` filter (json.dumps, ensure_ascii=False),
`raise_exception` and `strftime_now`.

Messages in cases.json are in orchestra's shape (tool-call arguments as JSON text);
they are turned into the shape `transformers` users pass (OpenAI's, arguments parsed
into a dict). Writes expected/<template>__<case>.txt, or .error with the exception's
message when the template refuses the conversation.

    pip install jinja2 && python3 tests/data/templates/render.py
"""
import json
import os
from datetime import datetime

import jinja2
import jinja2.ext
from jinja2.sandbox import ImmutableSandboxedEnvironment

HERE = os.path.dirname(os.path.abspath(__file__))


def raise_exception(message):
    raise jinja2.exceptions.TemplateError(message)


def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def strftime_now(fmt):
    return datetime.now().strftime(fmt)


def hf_message(m):
    out = {"role": m["role"], "content": m.get("content", "")}
    if m.get("tool_calls"):
        out["tool_calls"] = [
            {
                "id": c["id"],
                "type": "function",
                "function": {"name": c["name"], "arguments": json.loads(c["arguments"])},
            }
            for c in m["tool_calls"]
        ]
    for key in ("tool_call_id", "name"):
        if key in m:
            out[key] = m[key]
    return out


def hf_tool(t):
    function = {"name": t["name"]}
    if "description" in t:
        function["description"] = t["description"]
    function["parameters"] = t["parameters"]
    return {"type": "function", "function": function}


def main():
    with open(os.path.join(HERE, "cases.json"), encoding="utf-8") as f:
        spec = json.load(f)
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    out_dir = os.path.join(HERE, "expected")
    os.makedirs(out_dir, exist_ok=True)
    tools = [hf_tool(t) for t in spec["tools"]]
    for tname, t in spec["templates"].items():
        with open(os.path.join(HERE, t["file"]), encoding="utf-8") as f:
            template = env.from_string(f.read())
        for cname, case in spec["cases"].items():
            if case["tools"] and not t["tools"]:
                continue
            base = os.path.join(out_dir, f"{tname}__{cname}")
            for stale in (base + ".txt", base + ".error"):
                if os.path.exists(stale):
                    os.remove(stale)
            try:
                text = template.render(
                    messages=[hf_message(m) for m in case["messages"]],
                    tools=tools if case["tools"] else None,
                    bos_token=t["bos"],
                    eos_token=t["eos"],
                    add_generation_prompt=True,
                )
                path, body = base + ".txt", text
            except jinja2.exceptions.TemplateError as e:
                path, body = base + ".error", str(e)
            with open(path, "w", encoding="utf-8", newline="") as f:
                f.write(body)


if __name__ == "__main__":
    main()
