"""Chat LLM backends: the interface the agent pipelines use, and an OpenAI-compatible client.

`LLMBackend` is what span extraction, the planner/rewriter/observer agents and the
trajectory judge call. `OpenAICompatibleBackend` talks to any server that speaks
OpenAI's `POST /v1/chat/completions` (vLLM, SGLang, llama.cpp, TGI, the OpenAI API
itself, ...). A local JAX policy backend implements the same interface.

Errors are `LLMError`s: `LLMTimeoutError` and `LLMConnectionError` after the retries
ran out, `LLMHTTPError` for an HTTP error status, `LLMReplyError` for an answer
without a message. `batch_chat` returns them per conversation instead of raising, so
one bad request never loses a batch.
"""

from __future__ import annotations

import abc
import concurrent.futures
import logging
import os
import threading
import time
from typing import Any, Sequence

import gin
import requests

from masksearch_jax.http_sessions import ThreadSessions

logger = logging.getLogger(__name__)

Message = dict[str, Any]

# The longest wait a server's Retry-After header may impose between two attempts.
_MAX_RETRY_AFTER = 60.0


class LLMError(RuntimeError):
  """A chat request failed."""


class LLMTimeoutError(LLMError):
  """The server did not answer in time, on every attempt."""


class LLMConnectionError(LLMError):
  """The server could not be reached (or dropped the connection), on every attempt."""


class LLMHTTPError(LLMError):
  """The server answered with an HTTP error status.

  Attributes:
    status: The HTTP status code.
    server_message: The server's error message (or the start of its raw answer).
  """

  def __init__(self, message: str, status: int, server_message: str):
    super().__init__(message)
    self.status = status
    self.server_message = server_message


class LLMReplyError(LLMError):
  """The server answered 200 but without a usable `choices[0].message.content`."""


class LLMBackend(abc.ABC):
  """A chat model: takes OpenAI-style messages, returns the assistant's reply text."""

  @abc.abstractmethod
  def chat(self, messages: list[Message], *, max_tokens: int | None = None, temperature: float = 0.0,
           stop: list[str] | None = None) -> str:
    """Returns the reply to one conversation.

    Args:
      messages: The conversation, `[{"role": "system" | "user" | "assistant", "content": str}, ...]`.
      max_tokens: Most tokens to generate; None leaves it to the backend.
      temperature: Sampling temperature; 0 is greedy.
      stop: Strings that end generation (not included in the reply).

    Raises:
      LLMError: The request failed.
    """

  def batch_chat(self, conversations: Sequence[list[Message]], **kwargs) -> list[str | LLMError]:
    """Replies to many conversations, in order; a failed one gives its `LLMError` instead.

    This default asks one conversation after another; backends that can do better
    (concurrent requests, batched decoding) override it.

    Args:
      conversations: The conversations, each a list of messages as for `chat`.
      **kwargs: `max_tokens`, `temperature` and `stop`, as for `chat`, for every conversation.
    """
    results: list[str | LLMError] = []
    for messages in conversations:
      try:
        results.append(self.chat(messages, **kwargs))
      except LLMError as e:
        results.append(e)
    return results

  def close(self) -> None:
    """Releases connections and threads. Safe to call twice."""

  def __enter__(self):
    return self

  def __exit__(self, *exc) -> None:
    self.close()


@gin.configurable(module="masksearch_jax.agent.llm_backends")
class OpenAICompatibleBackend(LLMBackend):
  """A client of an OpenAI-compatible chat server (`POST {base_url}/chat/completions`).

  Retries connection errors, timeouts, HTTP 429 and 5xx answers with exponential
  backoff (honouring a numeric Retry-After header up to 60 s); any other 4xx fails at
  once with the server's message.

  Args:
    base_url: The API root, up to and including the version, e.g.
      "http://127.0.0.1:8000/v1" for a local vLLM server or "https://api.openai.com/v1".
    model: The model name the server expects in each request's "model" field.
    api_key_env: Name of the environment variable holding the API key, read when the
      backend is made. If it is unset or empty, no Authorization header is sent (fine
      for local servers). None never sends a key.
    timeout: Seconds to wait for the connection and, after that, between bytes of the
      answer; a server that stays silent longer fails the attempt.
    max_retries: Retries after the first attempt, for retryable failures.
    backoff: Seconds before the first retry; doubled for each next one.
    concurrency: Requests in flight at once in `batch_chat` (its thread pool size).
    extra_body: More fields for every request body (e.g. {"top_p": 0.9} or a server's
      own options); the fields `chat` sets take precedence.
  """

  def __init__(self, base_url: str, model: str, *,
               api_key_env: str | None = "OPENAI_API_KEY", timeout: float = 60.0, max_retries: int = 3,
               backoff: float = 0.5, concurrency: int = 8, extra_body: dict[str, Any] | None = None):
    if max_retries < 0:
      raise ValueError(f"max_retries must be >= 0, got {max_retries}")
    if concurrency < 1:
      raise ValueError(f"concurrency must be >= 1, got {concurrency}")
    if timeout <= 0:
      raise ValueError(f"timeout must be positive, got {timeout}")
    self.base_url = base_url.rstrip("/")
    self.url = f"{self.base_url}/chat/completions"
    self.model = model
    self.timeout = timeout
    self.max_retries = max_retries
    self.backoff = backoff
    self.concurrency = concurrency
    self.extra_body = dict(extra_body or {})
    api_key = os.environ.get(api_key_env, "") if api_key_env else ""
    self._headers = {"Content-Type": "application/json"}
    if api_key:
      self._headers["Authorization"] = f"Bearer {api_key}"
    self._sessions = ThreadSessions()
    self._lock = threading.Lock()
    self._executor: concurrent.futures.ThreadPoolExecutor | None = None

  def chat(self, messages: list[Message], *, max_tokens: int | None = None, temperature: float = 0.0,
           stop: list[str] | None = None) -> str:
    """Returns the reply to one conversation (see `LLMBackend.chat`).

    Raises:
      LLMTimeoutError, LLMConnectionError: The server stayed silent or unreachable.
      LLMHTTPError: The server answered an error status (a 4xx at once, a 429 or 5xx
        after the retries).
      LLMReplyError: The answer had no `choices[0].message.content` string.
    """
    payload: dict[str, Any] = {**self.extra_body, "model": self.model, "messages": messages,
                               "temperature": temperature}
    if max_tokens is not None:
      payload["max_tokens"] = max_tokens
    if stop:
      payload["stop"] = list(stop)
    return _reply_text(self._post(payload), self.url)

  def _post(self, payload: dict) -> Any:
    """Posts with retries; returns the decoded JSON answer."""
    attempts = self.max_retries + 1
    failure: LLMError | None = None
    delay = self.backoff
    for attempt in range(attempts):
      if attempt:
        time.sleep(delay)
        delay *= 2
      try:
        response = self._sessions.get().post(self.url, json=payload, headers=self._headers, timeout=self.timeout)
      except requests.Timeout as e:
        failure = LLMTimeoutError(f"POST {self.url}: no answer within {self.timeout} s ({type(e).__name__})")
      except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError) as e:
        failure = LLMConnectionError(f"POST {self.url}: {type(e).__name__}: {e}")
      except requests.RequestException as e:
        raise LLMError(f"POST {self.url}: {type(e).__name__}: {e}") from e
      else:
        status = response.status_code
        if status == 200:
          try:
            return response.json()
          except ValueError as e:
            raise LLMReplyError(f"POST {self.url} answered invalid JSON: {response.text[:200]!r}") from e
        message = _error_message(response)
        error = LLMHTTPError(f"POST {self.url} answered HTTP {status}: {message}", status, message)
        if status != 429 and status < 500:
          raise error
        failure = error
        retry_after = response.headers.get("Retry-After", "")
        if retry_after.replace(".", "", 1).isdigit():
          delay = max(delay, min(float(retry_after), _MAX_RETRY_AFTER))
      logger.debug("attempt %d/%d failed: %s", attempt + 1, attempts, failure)
    assert failure is not None
    if attempts > 1:
      failure.args = (f"{failure.args[0]} (after {attempts} attempts)",)
    raise failure

  def batch_chat(self, conversations: Sequence[list[Message]], **kwargs) -> list[str | LLMError]:
    """Replies to many conversations, `concurrency` at a time; errors are returned per item.

    Args:
      conversations: The conversations, each a list of messages as for `chat`.
      **kwargs: `max_tokens`, `temperature` and `stop`, as for `chat`, for every conversation.
    """
    conversations = list(conversations)
    if len(conversations) <= 1 or self.concurrency == 1:
      return super().batch_chat(conversations, **kwargs)

    def one(messages: list[Message]) -> str | LLMError:
      try:
        return self.chat(messages, **kwargs)
      except LLMError as e:
        return e

    with self._lock:
      if self._executor is None:
        self._executor = concurrent.futures.ThreadPoolExecutor(self.concurrency, thread_name_prefix="llm")
      executor = self._executor
    return list(executor.map(one, conversations))

  def close(self) -> None:
    """Stops the thread pool and closes the connections. Safe to call twice."""
    with self._lock:
      executor, self._executor = self._executor, None
    if executor is not None:
      executor.shutdown(wait=True)
    self._sessions.close()

  def __repr__(self) -> str:
    return f"OpenAICompatibleBackend({self.base_url!r}, model={self.model!r})"


def _reply_text(answer: Any, url: str) -> str:
  """`choices[0].message.content` of a chat completion, or LLMReplyError."""
  try:
    content = answer["choices"][0]["message"]["content"]
  except (KeyError, IndexError, TypeError) as e:
    raise LLMReplyError(f"POST {url} answered without choices[0].message.content: {str(answer)[:200]}") from e
  if not isinstance(content, str):
    raise LLMReplyError(f"POST {url} answered a non-text message content: {str(content)[:200]}")
  return content


def _error_message(response: requests.Response) -> str:
  """The server's error message: OpenAI's {"error": {"message"}}, {"error": str}, or raw text."""
  try:
    payload = response.json()
  except ValueError:
    return response.text[:500] or response.reason or ""
  if isinstance(payload, dict):
    error = payload.get("error", payload.get("detail", payload.get("message")))
    if isinstance(error, dict) and "message" in error:
      return str(error["message"])
    if error is not None:
      return str(error)
  return str(payload)[:500]
