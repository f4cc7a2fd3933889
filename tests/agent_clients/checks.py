"""The clients apps and agents are built on, against `orchestra serve` on a real model
(run by tests/agent_clients.rs): the openai-agents SDK with a function tool, LangChain's
`ChatOpenAI.bind_tools`, and instructor with a pydantic model. Each check prints one
line; any failure exits non-zero with the reason.

    python3 tests/agent_clients/checks.py URL MODEL [CHECK ...]
"""

import asyncio
import sys
import time

URL, MODEL = sys.argv[1], sys.argv[2]
WANTED = sys.argv[3:] or ["agents", "langchain", "instructor"]


def openai_agents():
    from agents import (
        Agent,
        ModelSettings,
        OpenAIChatCompletionsModel,
        Runner,
        function_tool,
        set_tracing_disabled,
    )
    from openai import AsyncOpenAI

    set_tracing_disabled(True)
    calls = []

    @function_tool
    def get_weather(city: str) -> str:
        """Get the current weather in a city."""
        calls.append(city)
        return f"The weather in {city} is sunny and 24 degrees Celsius."

    client = AsyncOpenAI(base_url=URL, api_key="none")
    agent = Agent(
        name="assistant",
        instructions="You answer the user's question. Use the tools to look things up.",
        model=OpenAIChatCompletionsModel(model=MODEL, openai_client=client),
        model_settings=ModelSettings(temperature=0),
        tools=[get_weather],
    )
    started = time.time()
    result = asyncio.run(Runner.run(agent, "What is the weather in Paris right now?", max_turns=6))
    answer = str(result.final_output)
    assert calls == ["Paris"], f"the tool was called {calls!r} (once, for Paris, expected)"
    assert "sunny" in answer.lower() or "24" in answer, f"the answer does not use the tool's result: {answer!r}"
    print(f"openai-agents: tool called once, answer uses it ({time.time() - started:.1f} s): {answer[:120]!r}")


def langchain():
    from langchain_core.tools import tool
    from langchain_openai import ChatOpenAI

    @tool
    def get_weather(city: str) -> str:
        """Get the current weather in a city."""
        return "sunny"

    llm = ChatOpenAI(base_url=URL, api_key="none", model=MODEL, temperature=0)
    started = time.time()
    msg = llm.bind_tools([get_weather]).invoke("What is the weather in Paris right now?")
    assert msg.tool_calls, f"no tool call: {msg!r}"
    call = msg.tool_calls[0]
    assert call["name"] == "get_weather", call
    assert "paris" in str(call["args"].get("city", "")).lower(), call
    print(f"langchain: bind_tools gave {call['name']}({call['args']}) ({time.time() - started:.1f} s)")


def instructor_check():
    import instructor
    from openai import OpenAI
    from pydantic import BaseModel

    class City(BaseModel):
        name: str
        country: str

    client = instructor.from_openai(OpenAI(base_url=URL, api_key="none"))
    started = time.time()
    city = client.chat.completions.create(
        model=MODEL,
        response_model=City,
        max_retries=2,
        temperature=0,
        messages=[{"role": "user", "content": "Paris is the capital of France. Extract the city and its country."}],
    )
    assert city.name.lower() == "paris", city
    assert city.country.lower() == "france", city
    print(f"instructor: {city!r} ({time.time() - started:.1f} s)")


CHECKS = {"agents": openai_agents, "langchain": langchain, "instructor": instructor_check}
for name in WANTED:
    CHECKS[name]()
