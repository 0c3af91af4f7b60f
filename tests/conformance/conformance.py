"""Real-client conformance: the official `openai` and `anthropic` Python SDKs against droid2api
and the in-repo mock upstream.

Starts `droid2api-mock` and `droid2api` (paths given on the command line), then drives the
gateway with the SDKs as users do: strict response validation, no retries. Prints one line per
check and a closing `N passed, M failed` line; exits non-zero on any failure.

    python tests/conformance/conformance.py target/debug/droid2api target/debug/droid2api-mock
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
import traceback
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))
from procs import Proc  # noqa: E402

import anthropic
import openai

MOCK_TEXT = "Hello from mock! 你好，世界 🌍🚀"
CLAUDE = "claude-sonnet-4-6"
GPT = "gpt-5.4"


def control(mock_url: str, method: str, path: str, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(
        mock_url + "/_mock/" + path, data=data, method=method, headers={"content-type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read() or b"null")


def sse_rule(path: str, events: list[tuple[str | None, dict]]):
    return {
        "path_contains": path,
        "times": 1,
        "reply": {
            "status": 200,
            "body": {"sse": {"events": [{"event": e, "data": json.dumps(d)} for e, d in events]}},
        },
    }


def anthropic_tool_stream(tool_id: str, name: str, fragments: list[str]):
    ev = []
    ev.append(("message_start", {"type": "message_start", "message": {
        "id": "msg_tool", "type": "message", "role": "assistant", "model": CLAUDE, "content": [],
        "stop_reason": None, "stop_sequence": None,
        "usage": {"input_tokens": 30, "output_tokens": 1}}}))
    ev.append(("content_block_start", {"type": "content_block_start", "index": 0,
                                       "content_block": {"type": "text", "text": ""}}))
    ev.append(("content_block_delta", {"type": "content_block_delta", "index": 0,
                                       "delta": {"type": "text_delta", "text": "Let me check."}}))
    ev.append(("content_block_stop", {"type": "content_block_stop", "index": 0}))
    ev.append(("content_block_start", {"type": "content_block_start", "index": 1, "content_block": {
        "type": "tool_use", "id": tool_id, "name": name, "input": {}}}))
    for f in fragments:
        ev.append(("content_block_delta", {"type": "content_block_delta", "index": 1,
                                           "delta": {"type": "input_json_delta", "partial_json": f}}))
    ev.append(("content_block_stop", {"type": "content_block_stop", "index": 1}))
    ev.append(("message_delta", {"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": None},
                                 "usage": {"output_tokens": 25}}))
    ev.append(("message_stop", {"type": "message_stop"}))
    return ev


def responses_call_stream(call_id: str, name: str, fragments: list[str]):
    seq = iter(range(1000))
    resp = {"id": "resp_tool", "object": "response", "created_at": int(time.time()), "model": GPT,
            "status": "in_progress", "output": []}
    item = {"type": "function_call", "id": "fc_1", "call_id": call_id, "name": name, "arguments": "",
            "status": "in_progress"}
    args = "".join(fragments)
    done_item = dict(item, arguments=args, status="completed")
    ev = [
        ("response.created", {"type": "response.created", "sequence_number": next(seq), "response": resp}),
        ("response.output_item.added", {"type": "response.output_item.added", "sequence_number": next(seq),
                                        "output_index": 0, "item": item}),
    ]
    for f in fragments:
        ev.append(("response.function_call_arguments.delta", {
            "type": "response.function_call_arguments.delta", "sequence_number": next(seq),
            "item_id": "fc_1", "output_index": 0, "delta": f}))
    ev.append(("response.function_call_arguments.done", {
        "type": "response.function_call_arguments.done", "sequence_number": next(seq),
        "item_id": "fc_1", "output_index": 0, "arguments": args}))
    ev.append(("response.output_item.done", {"type": "response.output_item.done", "sequence_number": next(seq),
                                             "output_index": 0, "item": done_item}))
    ev.append(("response.completed", {"type": "response.completed", "sequence_number": next(seq), "response": dict(
        resp, status="completed", output=[done_item],
        usage={"input_tokens": 20, "input_tokens_details": {"cached_tokens": 0}, "output_tokens": 9,
               "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 29})}))
    return ev


WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


def main() -> int:
    gateway_bin, mock_bin = sys.argv[1], sys.argv[2]
    work = tempfile.mkdtemp(prefix="droid2api-conformance-")
    mock = Proc([mock_bin, "--port", "0", "--host", "127.0.0.1"], dict(os.environ), r"MOCK_LISTENING (\S+)", "mock")
    mock_url = mock.match.group(1)
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": work,
        "HOST": "127.0.0.1",
        "PORT": "0",
        "DATA_DIR": os.path.join(work, "data"),
        "FACTORY_API_KEY": "fk-conformance-key-0001",
        "FACTORY_BASE_URL": mock_url,
        "WORKOS_BASE_URL": mock_url,
        "LOG_LEVEL": "warn,droid2api=info",
    }
    gw = Proc([gateway_bin], env, r"listening addr=(\S+)", "gateway")
    base = "http://" + gw.match.group(1)

    oai = openai.OpenAI(base_url=base + "/v1", api_key="unused", max_retries=0, _strict_response_validation=True)
    ant = anthropic.Anthropic(base_url=base, api_key="unused", max_retries=0, _strict_response_validation=True)

    results: list[tuple[str, str | None]] = []

    def check(name):
        def wrap(fn):
            try:
                control(mock_url, "POST", "reset")
                fn()
                results.append((name, None))
                print(f"PASS {name}", flush=True)
            except Exception:  # noqa: BLE001 - report every failure
                results.append((name, traceback.format_exc()))
                print(f"FAIL {name}\n{traceback.format_exc()}", flush=True)
            return fn
        return wrap

    for model in (CLAUDE, GPT):
        @check(f"chat stream helper get_final_completion ({model})")
        def _():
            with oai.chat.completions.stream(
                model=model, messages=[{"role": "user", "content": "Say hello"}]
            ) as stream:
                final = stream.get_final_completion()
            msg = final.choices[0].message
            assert msg.content == MOCK_TEXT, msg.content
            assert final.choices[0].finish_reason == "stop", final.choices[0].finish_reason
            assert final.model == model

        @check(f"raw stream with include_usage ({model})")
        def _():
            chunks = list(oai.chat.completions.create(
                model=model, stream=True, stream_options={"include_usage": True},
                messages=[{"role": "user", "content": "Say hello"}]))
            assert len({c.id for c in chunks}) == 1, "one id per stream"
            assert len({c.created for c in chunks}) == 1, "one created per stream"
            text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
            assert text == MOCK_TEXT, text
            assert chunks[0].choices[0].delta.role == "assistant"
            last = chunks[-1]
            assert last.choices == [] and last.usage is not None, last
            assert last.usage.completion_tokens == 12, last.usage
            assert last.usage.total_tokens == last.usage.prompt_tokens + last.usage.completion_tokens
            finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
            assert finishes == ["stop"], finishes

        @check(f"non-streaming ({model})")
        def _():
            r = oai.chat.completions.create(model=model, messages=[{"role": "user", "content": "Say hello"}])
            assert r.object == "chat.completion"
            assert r.choices[0].message.content == MOCK_TEXT
            assert r.choices[0].finish_reason == "stop"
            assert r.usage.completion_tokens == 12
            assert r.usage.prompt_tokens > 0

    @check("tool calls across two turns (anthropic upstream)")
    def _():
        control(mock_url, "POST", "rules",
                sse_rule("/a/v1/messages", anthropic_tool_stream("toolu_01", "get_weather", ['{"city":', ' "Paris"}'])))
        messages = [{"role": "user", "content": "Weather in Paris?"}]
        with oai.chat.completions.stream(model=CLAUDE, messages=messages, tools=[WEATHER_TOOL]) as stream:
            final = stream.get_final_completion()
        choice = final.choices[0]
        assert choice.finish_reason == "tool_calls", choice.finish_reason
        calls = choice.message.tool_calls
        assert len(calls) == 1 and calls[0].id == "toolu_01" and calls[0].function.name == "get_weather"
        assert json.loads(calls[0].function.arguments) == {"city": "Paris"}
        assert choice.message.content == "Let me check."
        messages.append(choice.message.model_dump(exclude_none=True))
        messages.append({"role": "tool", "tool_call_id": calls[0].id, "content": "18C and sunny"})
        r = oai.chat.completions.create(model=CLAUDE, messages=messages, tools=[WEATHER_TOOL])
        assert r.choices[0].message.content == MOCK_TEXT
        sent = [q for q in control(mock_url, "GET", "requests") if q["path"].endswith("/a/v1/messages")][-1]["json"]
        last_user = sent["messages"][-1]
        assert last_user["role"] == "user"
        assert last_user["content"][0] == {"type": "tool_result", "tool_use_id": "toolu_01", "content": "18C and sunny"}
        assistant = sent["messages"][-2]
        assert any(b["type"] == "tool_use" and b["input"] == {"city": "Paris"} for b in assistant["content"])

    @check("tool calls across two turns (responses upstream)")
    def _():
        control(mock_url, "POST", "rules",
                sse_rule("/o/v1/responses", responses_call_stream("call_1", "get_weather", ['{"city":', '"Rome"}'])))
        messages = [{"role": "user", "content": "Weather in Rome?"}]
        with oai.chat.completions.stream(model=GPT, messages=messages, tools=[WEATHER_TOOL]) as stream:
            final = stream.get_final_completion()
        choice = final.choices[0]
        assert choice.finish_reason == "tool_calls", choice.finish_reason
        calls = choice.message.tool_calls
        assert calls[0].id == "call_1" and json.loads(calls[0].function.arguments) == {"city": "Rome"}
        messages.append(choice.message.model_dump(exclude_none=True))
        messages.append({"role": "tool", "tool_call_id": "call_1", "content": "24C"})
        r = oai.chat.completions.create(model=GPT, messages=messages, tools=[WEATHER_TOOL])
        assert r.choices[0].message.content == MOCK_TEXT
        sent = [q for q in control(mock_url, "GET", "requests") if q["path"].endswith("/o/v1/responses")][-1]["json"]
        kinds = [i.get("type") for i in sent["input"]]
        assert kinds[-2:] == ["function_call", "function_call_output"], kinds
        assert sent["tools"][0]["strict"] is False

    @check("anthropic SDK messages.stream get_final_message on /v1/messages")
    def _():
        with ant.messages.stream(model=CLAUDE, max_tokens=200,
                                 messages=[{"role": "user", "content": "Say hello"}]) as stream:
            text = "".join(stream.text_stream)
            final = stream.get_final_message()
        assert text == MOCK_TEXT, text
        assert final.content[-1].text == MOCK_TEXT
        assert final.stop_reason == "end_turn"
        assert final.usage.output_tokens == 12

    @check("anthropic SDK count_tokens")
    def _():
        r = ant.messages.count_tokens(model=CLAUDE, messages=[{"role": "user", "content": "Say hello"}])
        assert r.input_tokens > 0

    gw.stop()
    mock.stop()
    failed = [n for n, e in results if e]
    print(f"conformance: {len(results) - len(failed)} passed, {len(failed)} failed", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
