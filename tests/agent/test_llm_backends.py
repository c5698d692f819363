"""OpenAICompatibleBackend against a real OpenAI-compatible HTTP server on loopback.

`FakeOpenAIServer` (below) is meant for every test that needs a chat server; it belongs in
tests/conftest.py, and tests/data/test_llm_span_extractor.py loads it from here until then.
"""

from __future__ import annotations

import socket
import time
from typing import Callable

import gin
import pytest

from fake_openai_server import FakeOpenAIServer, Reply, completion
from masksearch_jax.agent.llm_backends import (LLMBackend, LLMConnectionError, LLMError, LLMHTTPError,
                                               LLMReplyError, LLMTimeoutError, OpenAICompatibleBackend)


def _ask(text: str) -> list[dict]:
  return [{"role": "user", "content": text}]


def _backend(server: FakeOpenAIServer, **kwargs) -> OpenAICompatibleBackend:
  options = {"timeout": 2.0, "max_retries": 2, "backoff": 0.01, **kwargs}
  return OpenAICompatibleBackend(server.base_url, "test-model", **options)


# -- chat -------------------------------------------------------------------------------


def test_chat_sends_an_openai_request_and_returns_the_content(fake_openai, monkeypatch):
  monkeypatch.delenv("OPENAI_API_KEY", raising=False)
  server = fake_openai({"hello": [Reply("hi there")]})
  with _backend(server) as backend:
    assert backend.chat(_ask("hello"), max_tokens=7, temperature=0.3, stop=["</x>"]) == "hi there"
    assert backend.chat(_ask("hello")) == "hi there"
  (path, body, headers), (_, second, _) = server.requests
  assert path == "/v1/chat/completions"
  assert body == {"model": "test-model", "messages": _ask("hello"), "temperature": 0.3, "max_tokens": 7,
                  "stop": ["</x>"]}
  assert second == {"model": "test-model", "messages": _ask("hello"), "temperature": 0.0}
  assert "Authorization" not in headers


def test_api_key_is_read_from_the_named_environment_variable(fake_openai, monkeypatch):
  monkeypatch.setenv("MY_LLM_KEY", "sk-test-123")
  server = fake_openai()
  with _backend(server, api_key_env="MY_LLM_KEY") as backend:
    backend.chat(_ask("x"))
  with _backend(server, api_key_env=None) as backend:
    backend.chat(_ask("x"))
  assert server.requests[0][2]["Authorization"] == "Bearer sk-test-123"
  assert "Authorization" not in server.requests[1][2]


def test_extra_body_fields_are_sent(fake_openai):
  server = fake_openai()
  with _backend(server, extra_body={"top_p": 0.5, "model": "overridden"}) as backend:
    backend.chat(_ask("x"))
  body = server.requests[0][1]
  assert body["top_p"] == 0.5 and body["model"] == "test-model"


def test_500_then_success_is_retried(fake_openai):
  server = fake_openai({"flaky": [Reply("busy", status=500), Reply("fine")]})
  with _backend(server) as backend:
    assert backend.chat(_ask("flaky")) == "fine"
  assert server.count("flaky") == 2


def test_429_then_success_is_retried_after_retry_after(fake_openai):
  server = fake_openai({"limited": [Reply("slow down", status=429, headers={"Retry-After": "0.2"}), Reply("ok")]})
  start = time.perf_counter()
  with _backend(server) as backend:
    assert backend.chat(_ask("limited")) == "ok"
  assert time.perf_counter() - start >= 0.2
  assert server.count("limited") == 2


def test_400_fails_at_once_with_the_server_message(fake_openai):
  server = fake_openai({"bad": [Reply("context length exceeded", status=400)]})
  with _backend(server, max_retries=3) as backend:
    with pytest.raises(LLMHTTPError, match="HTTP 400: context length exceeded") as info:
      backend.chat(_ask("bad"))
  assert info.value.status == 400 and info.value.server_message == "context length exceeded"
  assert server.count("bad") == 1


def test_5xx_forever_fails_after_the_retries(fake_openai):
  server = fake_openai({"down": [Reply("overloaded", status=503)]})
  with _backend(server, max_retries=2) as backend:
    with pytest.raises(LLMHTTPError, match=r"HTTP 503: overloaded \(after 3 attempts\)") as info:
      backend.chat(_ask("down"))
  assert info.value.status == 503
  assert server.count("down") == 3


def test_a_slow_server_times_out_after_the_retries(fake_openai):
  server = fake_openai({"slow": [Reply("late", delay=1.0)]})
  start = time.perf_counter()
  with _backend(server, timeout=0.2, max_retries=1) as backend:
    with pytest.raises(LLMTimeoutError, match="no answer within 0.2 s"):
      backend.chat(_ask("slow"))
  assert time.perf_counter() - start < 1.5
  assert server.count("slow") == 2


def test_an_unreachable_server_is_a_connection_error():
  with socket.socket() as sock:
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
  with OpenAICompatibleBackend(f"http://127.0.0.1:{port}/v1", "m", max_retries=1, backoff=0.01) as backend:
    with pytest.raises(LLMConnectionError, match=r"after 2 attempts"):
      backend.chat(_ask("x"))


@pytest.mark.parametrize("body", [
    {"choices": []},
    {"no": "choices"},
    completion(None),
    {"choices": [{"message": {"role": "assistant", "content": [{"type": "text"}]}}]},
    b"not json at all",
    b"[1, 2]",
])
def test_an_answer_without_message_content_is_a_reply_error(fake_openai, body):
  server = fake_openai({"odd": [Reply(body=body)]})
  with _backend(server) as backend:
    with pytest.raises(LLMReplyError):
      backend.chat(_ask("odd"))
  assert server.count("odd") == 1


def test_a_wrong_base_url_is_an_http_error(fake_openai):
  server = fake_openai()
  with OpenAICompatibleBackend(server.base_url.replace("/v1", "/v2"), "m", max_retries=2) as backend:
    with pytest.raises(LLMHTTPError, match="HTTP 404: no route /v2/chat/completions"):
      backend.chat(_ask("x"))
  assert len(server.requests) == 1


def test_constructor_checks_its_arguments():
  with pytest.raises(ValueError, match="max_retries"):
    OpenAICompatibleBackend("http://x/v1", "m", max_retries=-1)
  with pytest.raises(ValueError, match="concurrency"):
    OpenAICompatibleBackend("http://x/v1", "m", concurrency=0)
  with pytest.raises(ValueError, match="timeout"):
    OpenAICompatibleBackend("http://x/v1", "m", timeout=0)


# -- batch_chat -------------------------------------------------------------------------


def test_batch_chat_returns_replies_and_errors_in_order(fake_openai):
  server = fake_openai({
      "good": [Reply("G")],
      "flaky": [Reply("oops", status=500), Reply("F")],
      "limited": [Reply("wait", status=429), Reply("L")],
      "bad": [Reply("nope", status=400)],
      "slow": [Reply("late", delay=1.0)],
      "empty": [Reply(body={"choices": []})],
  })
  conversations = [_ask(m) for m in ("good", "flaky", "bad", "slow", "limited", "empty", "good")]
  start = time.perf_counter()
  with _backend(server, timeout=0.3, max_retries=1) as backend:
    results = backend.batch_chat(conversations, max_tokens=5)
  assert time.perf_counter() - start < 2.0  # The slow one times out twice, in parallel with the rest.
  assert results[0] == "G" and results[1] == "F" and results[4] == "L" and results[6] == "G"
  assert isinstance(results[2], LLMHTTPError) and results[2].status == 400
  assert isinstance(results[3], LLMTimeoutError)
  assert isinstance(results[5], LLMReplyError)
  assert all(body["max_tokens"] == 5 for _, body, _ in server.requests)


def test_batch_chat_runs_concurrency_requests_at_once(fake_openai):
  server = fake_openai(default=Reply("x", delay=0.3))
  with _backend(server, concurrency=8) as backend:
    start = time.perf_counter()
    results = backend.batch_chat([_ask(str(i)) for i in range(16)])
    elapsed = time.perf_counter() - start
  assert results == ["x"] * 16
  assert 0.55 < elapsed < 2.0  # Two waves of 8, not 16 requests one after another (4.8 s).


def test_batch_chat_of_nothing_or_one(fake_openai):
  server = fake_openai({"one": [Reply("1")]})
  with _backend(server) as backend:
    assert backend.batch_chat([]) == []
    assert backend.batch_chat([_ask("one")]) == ["1"]


def test_close_is_idempotent_and_the_backend_still_works_after(fake_openai):
  server = fake_openai()
  backend = _backend(server)
  assert backend.batch_chat([_ask("a"), _ask("b")]) == ["[]", "[]"]
  backend.close()
  backend.close()
  assert backend.chat(_ask("c")) == "[]"
  backend.close()


class _Scripted(LLMBackend):
  """A backend without a server: replies by a function of the last message."""

  def __init__(self, answer: Callable[[str], str]):
    self.answer = answer

  def chat(self, messages, *, max_tokens=None, temperature=0.0, stop=None) -> str:
    return self.answer(messages[-1]["content"])


def test_default_batch_chat_is_sequential_and_returns_llm_errors():
  def answer(text: str) -> str:
    if text == "fail":
      raise LLMError("scripted failure")
    return text.upper()

  results = _Scripted(answer).batch_chat([_ask("a"), _ask("fail"), _ask("b")])
  assert results[0] == "A" and results[2] == "B"
  assert isinstance(results[1], LLMError) and str(results[1]) == "scripted failure"


def test_default_batch_chat_lets_other_exceptions_through():
  def answer(text: str) -> str:
    raise KeyError(text)

  with pytest.raises(KeyError):
    _Scripted(answer).batch_chat([_ask("a")])


def test_backend_is_configured_by_gin(fake_openai):
  server = fake_openai({"gin": [Reply("configured")]})
  gin.clear_config()
  try:
    gin.parse_config([
        f"masksearch_jax.agent.llm_backends.OpenAICompatibleBackend.base_url = '{server.base_url}'",
        "OpenAICompatibleBackend.model = 'gin-model'",
        "OpenAICompatibleBackend.timeout = 5.0",
        "OpenAICompatibleBackend.concurrency = 2",
    ])
    with OpenAICompatibleBackend() as backend:
      assert backend.concurrency == 2 and backend.timeout == 5.0
      assert backend.chat(_ask("gin")) == "configured"
  finally:
    gin.clear_config()
  assert server.requests[0][1]["model"] == "gin-model"
