"""The policy behind an OpenAI-compatible `POST /v1/chat/completions` endpoint.

`masksearch serve-model --checkpoint DIR` serves a `PolicyBackend` so the policy can
be the teacher or judge backend of the trajectory pipeline (`OpenAICompatibleBackend`
pointed at it), or be evaluated by outside harnesses with the official `openai` client.

Served: `POST /v1/chat/completions` (`messages`, `max_tokens` or
`max_completion_tokens`, `temperature`, `top_p`, `stop`, `n`, `logprobs`; other
fields are accepted and ignored, `stream: true` is refused), `GET /v1/models`
and `GET /health`. Concurrent requests with the same sampling settings are decoded
together in one batch (they wait at most `batch_wait_seconds` for company).
Client mistakes get OpenAI's error shape `{"error": {"message", "type", "param",
"code"}}` with a 4xx status; nothing a client sends stops the server.

Werkzeug (already installed with TensorBoard) parses HTTP and runs the threaded server.
"""

from __future__ import annotations

import concurrent.futures
import json
import logging
import threading
import time
import uuid
from typing import Any

from werkzeug.exceptions import HTTPException
from werkzeug.serving import make_server as make_wsgi_server
from werkzeug.wrappers import Request, Response

from masksearch_jax.agent.llm_backends import LLMError
from masksearch_jax.agent.policy_backend import Completion, ContextLengthError, PolicyBackend

logger = logging.getLogger(__name__)

MAX_BODY_BYTES = 8 << 20
MAX_N = 16


class _RequestError(Exception):
  def __init__(self, message: str, param: str | None = None, status: int = 400, code: str | None = None):
    super().__init__(message)
    self.message, self.param, self.status, self.code = message, param, status, code


def _error(status: int, message: str, *, param: str | None = None, code: str | None = None,
           kind: str = "invalid_request_error") -> Response:
  body = {"error": {"message": message, "type": kind, "param": param, "code": code}}
  return Response(json.dumps(body), status=status, mimetype="application/json")


def _number(body: dict, name: str, default: float, low: float, high: float) -> float:
  value = body.get(name, default)
  if value is None:
    return default
  if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
    raise _RequestError(f"'{name}' must be a number in [{low}, {high}], got {value!r}", name)
  return float(value)


def parse_chat_request(body: Any, max_new_tokens: int) -> dict:
  """Validates a chat completion request; returns the generation settings.

  Raises:
    _RequestError: Naming the field at fault.
  """
  if not isinstance(body, dict):
    raise _RequestError("the request body must be a JSON object")
  messages = body.get("messages")
  if not isinstance(messages, list) or not messages:
    raise _RequestError("'messages' must be a non-empty list", "messages")
  for i, message in enumerate(messages):
    if not isinstance(message, dict) or not isinstance(message.get("role"), str):
      raise _RequestError(f"messages[{i}] must be an object with a 'role'", f"messages[{i}]")
    content = message.get("content")
    if not isinstance(content, (str, list)):
      raise _RequestError(f"messages[{i}].content must be a string or a list of text parts", f"messages[{i}].content")
  if body.get("stream"):
    raise _RequestError("streaming is not supported; send 'stream': false", "stream")
  max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
  if max_tokens is None:
    max_tokens = max_new_tokens
  if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or not 1 <= max_tokens <= max_new_tokens:
    raise _RequestError(f"'max_tokens' must be an integer in [1, {max_new_tokens}], got {max_tokens!r}", "max_tokens")
  stop = body.get("stop")
  if stop is None:
    stop = []
  elif isinstance(stop, str):
    stop = [stop]
  if not isinstance(stop, list) or len(stop) > 4 or not all(isinstance(s, str) for s in stop):
    raise _RequestError("'stop' must be a string or a list of at most 4 strings", "stop")
  n = body.get("n", 1)
  if n is None:
    n = 1
  if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_N:
    raise _RequestError(f"'n' must be an integer in [1, {MAX_N}], got {n!r}", "n")
  return dict(messages=messages, max_tokens=max_tokens, temperature=_number(body, "temperature", 1.0, 0.0, 2.0),
              top_p=_number(body, "top_p", 1.0, 1e-6, 1.0), stop=tuple(stop), n=n,
              logprobs=bool(body.get("logprobs", False)))


class _Batcher:
  """Collects concurrent requests with equal settings and decodes them in one `generate` call."""

  def __init__(self, backend: PolicyBackend, wait_seconds: float):
    self.backend = backend
    self.wait_seconds = wait_seconds
    self._pending: list[tuple[tuple, list, concurrent.futures.Future]] = []
    self._condition = threading.Condition()
    self._closed = False
    self._thread = threading.Thread(target=self._loop, name="policy-batcher", daemon=True)
    self._thread.start()

  def submit(self, settings: tuple, messages: list) -> concurrent.futures.Future:
    future: concurrent.futures.Future = concurrent.futures.Future()
    with self._condition:
      if self._closed:
        raise RuntimeError("the server is shutting down")
      self._pending.append((settings, messages, future))
      self._condition.notify()
    return future

  def _loop(self) -> None:
    while True:
      with self._condition:
        while not self._pending and not self._closed:
          self._condition.wait()
        if self._closed and not self._pending:
          return
      time.sleep(self.wait_seconds)  # Let concurrent requests join this batch.
      with self._condition:
        settings = self._pending[0][0]
        batch = [item for item in self._pending if item[0] == settings]
        self._pending = [item for item in self._pending if item[0] != settings]
      max_tokens, temperature, top_p, stop = settings
      try:
        results = self.backend.generate([messages for _, messages, _ in batch], max_tokens=max_tokens,
                                        temperature=temperature, top_p=top_p, stop=stop)
      except Exception as e:  # Every waiting request gets the failure; the server goes on.
        logger.exception("generation failed for a batch of %d", len(batch))
        for _, _, future in batch:
          future.set_exception(e)
        continue
      for (_, _, future), result in zip(batch, results):
        future.set_result(result)

  def close(self) -> None:
    with self._condition:
      self._closed = True
      self._condition.notify_all()
    self._thread.join()


class ModelServer:
  """A threaded Werkzeug server for a `PolicyBackend` on `host:port` (port 0: any free port).

  Use `start()` / `stop()` (or a `with` block), or `serve_forever()`.
  """

  def __init__(self, backend: PolicyBackend, host: str = "127.0.0.1", port: int = 0, *,
               batch_wait_seconds: float = 0.005):
    self.backend = backend
    self._batcher = _Batcher(backend, batch_wait_seconds)
    self._server = make_wsgi_server(host, port, self._app, threaded=True)
    self._thread: threading.Thread | None = None

  @property
  def url(self) -> str:
    host, port = self._server.server_address[:2]
    return f"http://{host}:{port}"

  def serve_forever(self) -> None:
    self._server.serve_forever()

  def start(self) -> ModelServer:
    self._thread = threading.Thread(target=self._server.serve_forever, name="model-server", daemon=True)
    self._thread.start()
    return self

  def stop(self) -> None:
    if self._thread is not None:
      self._server.shutdown()
      self._thread.join()
      self._thread = None
    self._server.server_close()
    self._batcher.close()

  def __enter__(self) -> ModelServer:
    return self

  def __exit__(self, *exc) -> None:
    self.stop()

  # -- the WSGI application -------------------------------------------------------------------------

  def _app(self, environ, start_response):
    request = Request(environ)
    request.max_content_length = MAX_BODY_BYTES
    try:
      response = self._route(request)
    except HTTPException as e:
      response = _error(e.code or 400, e.description or e.name)
    except _RequestError as e:
      response = _error(e.status, e.message, param=e.param, code=e.code)
    except Exception as e:  # Answer 500 and keep serving; the cause goes to the log.
      logger.exception("internal error serving %s %s", request.method, request.path)
      response = _error(500, f"internal error: {type(e).__name__}: {e}", kind="server_error")
    return response(environ, start_response)

  def _route(self, request: Request) -> Response:
    routes = {"/v1/chat/completions": "POST", "/v1/models": "GET", "/health": "GET"}
    allowed = routes.get(request.path.rstrip("/") or "/")
    if allowed is None:
      return _error(404, f"unknown path {request.path!r}; use POST /v1/chat/completions", code="not_found")
    if request.method != allowed:
      return _error(405, f"method {request.method} not allowed on {request.path}; use {allowed}")
    if request.path.startswith("/health"):
      return self._json({"status": "ok", "model": self.backend.model_name})
    if request.path.startswith("/v1/models"):
      return self._json({"object": "list", "data": [{"id": self.backend.model_name, "object": "model",
                                                     "created": 0, "owned_by": "masksearch_jax"}]})
    return self._chat(request)

  def _json(self, payload: Any) -> Response:
    return Response(json.dumps(payload, ensure_ascii=False), mimetype="application/json")

  def _chat(self, request: Request) -> Response:
    try:
      body = json.loads(request.get_data(cache=False) or b"null")
    except (ValueError, UnicodeDecodeError) as e:
      raise _RequestError(f"the request body is not valid JSON: {e}") from None
    settings = parse_chat_request(body, self.backend.max_new_tokens)
    key = (settings["max_tokens"], settings["temperature"], settings["top_p"], settings["stop"])
    futures = [self._batcher.submit(key, settings["messages"]) for _ in range(settings["n"])]
    results: list[Completion] = []
    for future in futures:
      result = future.result()
      if isinstance(result, ContextLengthError):
        raise _RequestError(str(result).replace("conversation 0", "the conversation"), "messages",
                            code="context_length_exceeded")
      if isinstance(result, LLMError):
        raise _RequestError(str(result).replace("conversation 0: ", ""), "messages")
      results.append(result)
    choices = []
    for i, result in enumerate(results):
      choice = {"index": i, "message": {"role": "assistant", "content": result.text},
                "finish_reason": result.finish_reason, "logprobs": None}
      if settings["logprobs"]:
        decode = self.backend.encoder.decode
        choice["logprobs"] = {"content": [
            {"token": decode([t]), "logprob": lp, "bytes": list(decode([t]).encode("utf-8")), "top_logprobs": []}
            for t, lp in zip(result.token_ids, result.logprobs)]}
      choices.append(choice)
    prompt_tokens = results[0].prompt_tokens
    completion_tokens = sum(r.completion_tokens for r in results)
    return self._json({"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion", "created": int(time.time()),
                       "model": self.backend.model_name, "choices": choices,
                       "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                                 "total_tokens": prompt_tokens + completion_tokens}})
