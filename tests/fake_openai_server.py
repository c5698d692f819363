"""A scripted OpenAI-compatible chat server on loopback, for tests of LLM clients.

Shared by the test suite through the `fake_openai` fixture in tests/conftest.py; test
modules import `Reply` and `completion` from here to script answers.
"""

from __future__ import annotations

import dataclasses
import http.server
import json
import threading
import time
from typing import Any, Callable


@dataclasses.dataclass
class Reply:
  """One scripted answer of `FakeOpenAIServer`.

  Attributes:
    content: The assistant message's text, sent as a chat completion; ignored if `body` is set.
    status: The HTTP status.
    body: A raw answer instead: bytes as they are, anything else as JSON.
    delay: Seconds to wait before answering.
    headers: Extra response headers.
  """

  content: str | None = ""
  status: int = 200
  body: Any = None
  delay: float = 0.0
  headers: dict[str, str] = dataclasses.field(default_factory=dict)


def completion(content: str | None, model: str = "fake") -> dict:
  """A chat-completion answer with `content` as the first choice's message."""
  return {"id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": model,
          "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                       "finish_reason": "stop"}],
          "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}


class FakeOpenAIServer(http.server.ThreadingHTTPServer):
  """An OpenAI-compatible chat server on 127.0.0.1 (a free port), serving in a thread.

  Answers `POST /v1/chat/completions` from a script: `script` maps a marker (a substring of
  the request's last message) to the replies for the requests that carry it, in order; the
  last reply of a marker repeats once its list is used up. Requests without a known marker
  get `default`. Scripting by content, not arrival order, keeps concurrent clients
  deterministic. Every request is logged in `requests` as (path, JSON body, headers).

  Args:
    script: Marker -> replies.
    default: The reply to requests no marker matches (or a function of the request body).
  """

  daemon_threads = True

  def __init__(self, script: dict[str, list[Reply]] | None = None,
               default: Reply | Callable[[dict], Reply] = Reply("[]")):
    self.script = {marker: list(replies) for marker, replies in (script or {}).items()}
    self.default = default
    self.requests: list[tuple[str, Any, dict[str, str]]] = []
    self.disconnects = 0  # Answers the client did not wait for (it timed out).
    self.lock = threading.Lock()
    super().__init__(("127.0.0.1", 0), _FakeOpenAIHandler)
    self.thread = threading.Thread(target=self.serve_forever, args=(0.05,), daemon=True)
    self.thread.start()

  @property
  def base_url(self) -> str:
    return f"http://127.0.0.1:{self.server_address[1]}/v1"

  def count(self, marker: str) -> int:
    """How many requests carried `marker`."""
    with self.lock:
      return sum(1 for _, body, _ in self.requests if marker in _last_message(body))

  def next_reply(self, body: Any) -> Reply:
    text = _last_message(body)
    with self.lock:
      for marker, replies in self.script.items():
        if marker in text:
          return replies.pop(0) if len(replies) > 1 else replies[0]
    return self.default(body) if callable(self.default) else self.default

  def close(self) -> None:
    self.shutdown()
    self.server_close()

  def __enter__(self) -> "FakeOpenAIServer":
    return self

  def __exit__(self, *exc) -> None:
    self.close()


def _last_message(body: Any) -> str:
  try:
    return str(body["messages"][-1]["content"])
  except (KeyError, IndexError, TypeError):
    return ""


class _FakeOpenAIHandler(http.server.BaseHTTPRequestHandler):
  protocol_version = "HTTP/1.1"

  def log_message(self, *args) -> None:
    """Quiet: tests read `server.requests`."""

  def do_POST(self) -> None:
    length = int(self.headers.get("Content-Length") or 0)
    raw = self.rfile.read(length)
    try:
      body: Any = json.loads(raw)
    except ValueError:
      body = raw
    server: FakeOpenAIServer = self.server  # type: ignore[assignment]
    with server.lock:
      server.requests.append((self.path, body, dict(self.headers)))
    if self.path != "/v1/chat/completions":
      self._send(Reply(status=404, body={"error": {"message": f"no route {self.path}"}}))
      return
    self._send(server.next_reply(body))

  def _send(self, reply: Reply) -> None:
    time.sleep(reply.delay)
    if reply.body is not None:
      data = reply.body if isinstance(reply.body, bytes) else json.dumps(reply.body).encode()
    elif reply.status == 200:
      data = json.dumps(completion(reply.content)).encode()
    else:
      data = json.dumps({"error": {"message": reply.content or "error", "type": "test"}}).encode()
    try:
      self.send_response(reply.status)
      self.send_header("Content-Type", "application/json")
      self.send_header("Content-Length", str(len(data)))
      for key, value in reply.headers.items():
        self.send_header(key, value)
      self.end_headers()
      self.wfile.write(data)
    except (BrokenPipeError, ConnectionResetError):
      with self.server.lock:  # type: ignore[attr-defined]
        self.server.disconnects += 1  # type: ignore[attr-defined]
