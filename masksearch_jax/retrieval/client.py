"""A `Retriever` that asks a retrieval server over HTTP (Search-R1's protocol)."""

from __future__ import annotations

import logging
import time
from typing import Any, Sequence

import requests

from masksearch_jax.http_sessions import ThreadSessions
from masksearch_jax.retrieval.retriever import Retriever, SearchHit

logger = logging.getLogger(__name__)

DEFAULT_BATCH_SIZE = 256  # Under the server's default limit of 512 queries per request.


class RetrievalError(RuntimeError):
  """Retrieval failed: the server was unreachable, failed, or gave a bad answer."""


class RetrievalRequestError(RetrievalError):
  """The server rejected the request (a 4xx); retrying the same request cannot help.

  Attributes:
    status: The HTTP status code.
    server_message: The server's `error` message (or its raw answer).
  """

  def __init__(self, message: str, status: int, server_message: str):
    super().__init__(message)
    self.status = status
    self.server_message = server_message


def _document_to_hit(document: dict, score: float) -> SearchHit:
  title = document.get("title")
  text = document.get("text")
  if title is None or text is None:
    # Search-R1's own server sends only `contents`: '"Title"\ntext'.
    contents = document.get("contents", "")
    head, _, rest = contents.partition("\n")
    title = head[1:-1] if len(head) >= 2 and head[0] == head[-1] == '"' else head
    text = rest
  return SearchHit(id=str(document.get("id", "")), title=title, text=text, score=float(score))


class HttpRetriever(Retriever):
  """Searches through a `masksearch serve-index` (or Search-R1) server.

  Args:
    base_url: The server's base URL, e.g. `http://127.0.0.1:8000`.
    timeout: Seconds to wait for the connection and for the answer.
    max_retries: Retries after the first attempt on connection errors,
      timeouts and 5xx answers. A 4xx is never retried.
    backoff: Seconds before the first retry; doubled for each next one.
    batch_size: Most queries per request; larger batches are split. None
      sends everything in one request.
  """

  def __init__(self, base_url: str, *, timeout: float = 10.0, max_retries: int = 3,
               backoff: float = 0.2, batch_size: int | None = DEFAULT_BATCH_SIZE):
    if max_retries < 0:
      raise ValueError(f"max_retries must be >= 0, got {max_retries}")
    if batch_size is not None and batch_size < 1:
      raise ValueError(f"batch_size must be positive or None, got {batch_size}")
    self.base_url = base_url.rstrip("/")
    self.timeout = timeout
    self.max_retries = max_retries
    self.backoff = backoff
    self.batch_size = batch_size
    self._sessions = ThreadSessions()

  def _request(self, method: str, path: str, payload: dict | None = None) -> Any:
    """Sends one request with retries; returns the decoded JSON answer."""
    url = self.base_url + path
    attempts = self.max_retries + 1
    last_cause = ""
    for attempt in range(attempts):
      if attempt:
        time.sleep(self.backoff * 2 ** (attempt - 1))
      try:
        response = self._sessions.get().request(method, url, json=payload, timeout=self.timeout)
      except (requests.ConnectionError, requests.Timeout) as e:
        last_cause = f"{type(e).__name__}: {e}"
        logger.debug("%s %s attempt %d/%d failed: %s", method, url, attempt + 1, attempts, last_cause)
        continue
      status = response.status_code
      if status >= 500:
        last_cause = f"HTTP {status}: {_error_message(response)}"
        logger.debug("%s %s attempt %d/%d failed: %s", method, url, attempt + 1, attempts, last_cause)
        continue
      if status >= 400:
        message = _error_message(response)
        raise RetrievalRequestError(f"{method} {url} was rejected with HTTP {status}: {message}",
                                    status, message)
      if status != 200:
        raise RetrievalError(f"{method} {url} answered HTTP {status}, expected 200")
      try:
        return response.json()
      except ValueError as e:
        raise RetrievalError(f"{method} {url} answered with invalid JSON: {e}") from e
    raise RetrievalError(f"{method} {url} failed after {attempts} attempt(s); last cause: {last_cause}")

  def health(self) -> dict:
    """Returns the server's `/health` answer (status, num_passages, limits)."""
    answer = self._request("GET", "/health")
    if not isinstance(answer, dict):
      raise RetrievalError(f"GET {self.base_url}/health answered {answer!r}, expected a JSON object")
    return answer

  def _retrieve(self, queries: list[str], top_k: int) -> list[list[SearchHit]]:
    answer = self._request("POST", "/retrieve", {"queries": queries, "topk": top_k, "return_scores": True})
    result = answer.get("result") if isinstance(answer, dict) else None
    if not isinstance(result, list) or len(result) != len(queries):
      raise RetrievalError(f"POST {self.base_url}/retrieve answered without a 'result' list of "
                           f"{len(queries)} items: {str(answer)[:200]}")
    try:
      return [[_document_to_hit(item["document"], item["score"]) for item in hits] for hits in result]
    except (KeyError, TypeError, ValueError, AttributeError) as e:
      raise RetrievalError(f"POST {self.base_url}/retrieve answered a malformed result "
                           f"({type(e).__name__}: {e}): {str(result)[:200]}") from e

  def batch_search(self, queries: Sequence[str], top_k: int = 5) -> list[list[SearchHit]]:
    """Returns up to `top_k` hits per query, best first.

    Raises:
      ValueError: `top_k` is not a positive integer.
      RetrievalRequestError: The server rejected the request (4xx).
      RetrievalError: The server stayed unreachable or failing after retries.
    """
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
      raise ValueError(f"top_k must be a positive integer, got {top_k!r}")
    if isinstance(queries, str):
      raise TypeError("batch_search takes a sequence of queries, not one string; use search()")
    queries = list(queries)
    if not queries:
      return []
    size = self.batch_size or len(queries)
    results: list[list[SearchHit]] = []
    for start in range(0, len(queries), size):
      results.extend(self._retrieve(queries[start:start + size], top_k))
    return results

  def close(self) -> None:
    """Closes the connections. Safe to call twice."""
    self._sessions.close()

  def __repr__(self) -> str:
    return f"HttpRetriever({self.base_url!r})"


def _error_message(response: requests.Response) -> str:
  try:
    payload = response.json()
  except ValueError:
    return response.text[:500] or response.reason or ""
  if isinstance(payload, dict) and "error" in payload:
    return str(payload["error"])
  return str(payload)[:500]
