"""An HTTP retrieval server speaking Search-R1's protocol.

`POST /retrieve` with `{"queries": [str], "topk": int, "return_scores": bool}`
answers `{"result": [[{"document": {"id", "contents", "title", "text"},
"score": float}, ...], ...]}` (without scores, each inner item is the document
alone). `GET /health` answers `{"status": "ok", "num_passages": N, ...}`.

Every client mistake gets a 4xx JSON `{"error": "..."}` naming the field and
the limit; a genuine internal failure gets a 500 JSON and is logged; nothing a
client sends stops the server. Standard library only (`ThreadingHTTPServer`,
HTTP/1.1 keep-alive).
"""

from __future__ import annotations

import dataclasses
import http
import http.server
import json
import logging
import os
import signal
import socket
import sys
import threading
from typing import Any

from masksearch_jax.retrieval.retriever import Retriever

logger = logging.getLogger(__name__)

DEFAULT_TOPK = 3  # Search-R1's default.
# A JSON string may spell one character as a 12-byte surrogate-pair escape
# ("\ud83d\ude00" is 2 characters), so 6 bytes per character is the worst case.
_MAX_JSON_BYTES_PER_CHAR = 6


@dataclasses.dataclass(frozen=True)
class ServerLimits:
  """What one request may ask for.

  Attributes:
    max_queries: Most queries in one request.
    max_query_chars: Longest query, in characters.
    max_topk: Largest `topk`.
    max_body_bytes: Largest request body; None admits any request within the
      other limits, however its strings are escaped.
    timeout_seconds: A connection idle or stalled this long is closed.
  """

  max_queries: int = 512
  max_query_chars: int = 10_000
  max_topk: int = 100
  max_body_bytes: int | None = None
  timeout_seconds: float = 60.0

  def __post_init__(self):
    for name in ("max_queries", "max_query_chars", "max_topk"):
      if getattr(self, name) < 1:
        raise ValueError(f"ServerLimits.{name} must be at least 1, got {getattr(self, name)}")

  @property
  def body_bytes(self) -> int:
    """The effective body size limit."""
    if self.max_body_bytes is not None:
      return self.max_body_bytes
    return self.max_queries * (self.max_query_chars * _MAX_JSON_BYTES_PER_CHAR + 8) + 65_536


class RequestError(Exception):
  """A client mistake, answered with `status` and a JSON error message."""

  def __init__(self, status: int, message: str, *, close: bool = False):
    super().__init__(message)
    self.status = status
    self.message = message
    self.close = close


def parse_retrieve_request(body: bytes, limits: ServerLimits) -> tuple[list[str], int, bool]:
  """Validates a `/retrieve` body; returns (queries, topk, return_scores).

  Unknown fields are ignored, as in Search-R1.

  Raises:
    RequestError: The body is malformed or over a limit.
  """
  try:
    request = json.loads(body)
  except RecursionError:
    raise RequestError(400, "request body is nested too deeply to be a /retrieve request") from None
  except ValueError as e:  # JSONDecodeError and UnicodeDecodeError.
    raise RequestError(400, f"request body is not valid JSON: {e}") from None
  if not isinstance(request, dict):
    raise RequestError(400, f"request body must be a JSON object, got {type(request).__name__}")
  if "queries" not in request:
    raise RequestError(400, "missing field 'queries' (a list of strings)")
  queries = request["queries"]
  if not isinstance(queries, list):
    raise RequestError(400, f"'queries' must be a list of strings, got {type(queries).__name__}")
  if len(queries) > limits.max_queries:
    raise RequestError(413, f"'queries' has {len(queries)} queries; the limit is {limits.max_queries} "
                            "per request (send several requests)")
  for i, query in enumerate(queries):
    if not isinstance(query, str):
      raise RequestError(400, f"'queries'[{i}] must be a string, got {type(query).__name__}")
    if len(query) > limits.max_query_chars:
      raise RequestError(413, f"'queries'[{i}] has {len(query)} characters; the limit is "
                              f"{limits.max_query_chars}")
  topk = request.get("topk")
  if topk is None:
    topk = DEFAULT_TOPK
  elif isinstance(topk, bool) or not isinstance(topk, int):
    raise RequestError(400, f"'topk' must be a positive integer, got {json.dumps(topk)[:50]}")
  elif topk < 1:
    raise RequestError(400, f"'topk' must be a positive integer, got {topk}")
  elif topk > limits.max_topk:
    raise RequestError(400, f"'topk' is {topk}; the limit is {limits.max_topk}")
  return_scores = request.get("return_scores", False)
  if not isinstance(return_scores, bool):
    raise RequestError(400, f"'return_scores' must be true or false, got {json.dumps(return_scores)[:50]}")
  return queries, topk, return_scores


class _Handler(http.server.BaseHTTPRequestHandler):
  """One connection; `server` is a `RetrievalServer`."""

  protocol_version = "HTTP/1.1"
  # Used to answer request lines too broken to carry a version; the standard
  # library's "HTTP/0.9" would send the JSON error with no status line at all.
  default_request_version = "HTTP/1.0"
  server_version = "masksearch-retrieval"
  sys_version = ""
  # Headers and body go out as separate writes; without this, Nagle plus the
  # client's delayed ACK adds ~40 ms to every keep-alive response.
  disable_nagle_algorithm = True
  server: RetrievalServer

  def setup(self):
    self.timeout = self.server.limits.timeout_seconds
    super().setup()

  def _send_json(self, status: int, payload: Any, *, close: bool = False,
                 headers: dict[str, str] | None = None) -> None:
    body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    self.send_response(status)
    self.send_header("Content-Type", "application/json; charset=utf-8")
    self.send_header("Content-Length", str(len(body)))
    for name, value in (headers or {}).items():
      self.send_header(name, value)
    if close:
      self.send_header("Connection", "close")
      self.close_connection = True
    self.end_headers()
    if self.command != "HEAD":
      self.wfile.write(body)

  def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
    # http.server's own errors (bad request line, headers too long, ...) as
    # JSON like ours. The request could not be parsed, so the connection ends.
    try:
      phrase = http.HTTPStatus(code).phrase
    except ValueError:
      phrase = "error"
    self.log_error("%d %s", code, message or phrase)
    self._send_json(code, {"error": message or phrase}, close=True)

  def log_message(self, format: str, *args) -> None:  # noqa: A002 (http.server's name)
    logger.debug("%s - %s", self.address_string(), format % args)

  def log_error(self, format: str, *args) -> None:  # noqa: A002
    logger.info("%s - %s", self.address_string(), format % args)

  def _path(self) -> str:
    return self.path.split("?", 1)[0]

  def _method_not_allowed(self) -> None:
    """Answers 404 for an unknown path, else 405 naming the allowed method."""
    path = self._path()
    allowed = {"/retrieve": "POST", "/health": "GET"}.get(path)
    self._drain_or_close()
    if allowed is None:
      self._send_json(404, {"error": f"unknown path {path!r}; use POST /retrieve or GET /health"},
                      close=self.close_connection)
    else:
      self._send_json(405, {"error": f"method {self.command} not allowed on {path}; use {allowed}"},
                      close=self.close_connection, headers={"Allow": allowed})

  def __getattr__(self, name: str):
    # http.server dispatches method X to do_X and answers unknown ones with an
    # HTML 501; every method we do not serve is a JSON 405 instead.
    if name.startswith("do_"):
      return self._method_not_allowed
    raise AttributeError(name)

  def _drain_or_close(self) -> None:
    """Reads and discards a small request body; else marks the connection to close."""
    length = self.headers.get("Content-Length")
    if self.headers.get("Transfer-Encoding"):
      self.close_connection = True
      return
    if not length:
      return
    try:
      n = int(length)
    except ValueError:
      self.close_connection = True
      return
    if 0 <= n <= 65_536:
      self.rfile.read(n)
    else:
      self.close_connection = True

  def do_GET(self) -> None:  # noqa: N802 (http.server's name)
    if self._path() != "/health":
      self._method_not_allowed()
      return
    self._drain_or_close()
    self._send_json(200, self.server.health(), close=self.close_connection)

  def _read_body(self) -> bytes:
    if self.headers.get("Transfer-Encoding"):
      raise RequestError(411, "chunked request bodies are not supported; send a Content-Length header",
                         close=True)
    length = self.headers.get("Content-Length")
    if length is None:
      raise RequestError(411, "missing Content-Length header", close=True)
    try:
      n = int(length)
      if n < 0:
        raise ValueError(length)
    except ValueError:
      raise RequestError(400, f"invalid Content-Length header {length!r}", close=True) from None
    limit = self.server.limits.body_bytes
    if n > limit:
      raise RequestError(413, f"request body has {n} bytes; the limit is {limit} bytes", close=True)
    try:
      body = self.rfile.read(n)
    except TimeoutError:
      raise RequestError(408, f"timed out reading the {n}-byte request body", close=True) from None
    if len(body) != n:
      raise RequestError(400, f"request body ended after {len(body)} of {n} bytes", close=True)
    return body

  def do_POST(self) -> None:  # noqa: N802
    if self._path() != "/retrieve":
      self._method_not_allowed()
      return
    try:
      body = self._read_body()
      queries, topk, return_scores = parse_retrieve_request(body, self.server.limits)
    except RequestError as e:
      self.log_error("%d %s", e.status, e.message)
      self._send_json(e.status, {"error": e.message}, close=e.close)
      return
    try:
      results = self.server.retriever.batch_search(queries, topk) if queries else []
      payload = {"result": [[hit.to_search_r1(return_scores) for hit in hits] for hits in results]}
    except Exception as e:  # Answer 500 and keep serving; the cause goes to the log.
      logger.exception("internal error serving /retrieve (%d queries, topk=%d)", len(queries), topk)
      self._send_json(500, {"error": f"internal error: {type(e).__name__}: {e}"})
      return
    self._send_json(200, payload)


class RetrievalServer(http.server.ThreadingHTTPServer):
  """A threaded HTTP server around one `Retriever`.

  Use `start()` to serve from a background thread and `stop()` (or a `with`
  block) to end; or call `serve_forever()` yourself.
  """

  daemon_threads = True
  request_queue_size = 128

  def __init__(self, retriever: Retriever, host: str = "127.0.0.1", port: int = 0,
               limits: ServerLimits | None = None, *, owns_retriever: bool = False):
    self.retriever = retriever
    self.limits = limits or ServerLimits()
    self._owns_retriever = owns_retriever
    self._thread: threading.Thread | None = None
    if ":" in host:  # An IPv6 address.
      self.address_family = socket.AF_INET6
    super().__init__((host, port), _Handler)

  @property
  def url(self) -> str:
    """The base URL, e.g. `http://127.0.0.1:8000`."""
    host, port = self.server_address[:2]
    if ":" in host:
      host = f"[{host}]"
    return f"http://{host}:{port}"

  def health(self) -> dict:
    """The `/health` payload."""
    num_passages = getattr(self.retriever, "num_passages", None)
    return {"status": "ok", "num_passages": num_passages,
            "limits": {"max_queries": self.limits.max_queries,
                       "max_query_chars": self.limits.max_query_chars,
                       "max_topk": self.limits.max_topk,
                       "max_body_bytes": self.limits.body_bytes}}

  def handle_error(self, request, client_address) -> None:
    exc = sys.exc_info()[1]
    if isinstance(exc, (ConnectionError, TimeoutError)):
      logger.info("connection from %s ended: %s", client_address, exc)
    else:
      logger.exception("error on the connection from %s", client_address)

  def start(self) -> RetrievalServer:
    """Serves from a daemon thread; returns self."""
    if self._thread is not None:
      raise RuntimeError("server already started")
    # A short poll interval makes stop() quick.
    self._thread = threading.Thread(target=self.serve_forever, args=(0.05,),
                                     name=f"retrieval-server-{self.url}", daemon=True)
    self._thread.start()
    return self

  def stop(self) -> None:
    """Stops serving, closes the socket and (if owned) the retriever."""
    if self._thread is not None:
      self.shutdown()
      self._thread.join()
      self._thread = None
    self.server_close()
    if self._owns_retriever:
      self.retriever.close()

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.stop()


def make_server(retriever_or_index_dir: Retriever | str | os.PathLike, host: str = "127.0.0.1",
                port: int = 0, limits: ServerLimits | None = None, **retriever_kwargs) -> RetrievalServer:
  """Returns a bound, not yet serving, server.

  Args:
    retriever_or_index_dir: A `Retriever`, or an index directory to open with
      `TantivyRetriever(**retriever_kwargs)` (closed by `stop()`).
    host: Bind address; loopback unless told otherwise.
    port: TCP port; 0 picks a free one (see `.url`).
    limits: Request limits.
  """
  if isinstance(retriever_or_index_dir, Retriever):
    return RetrievalServer(retriever_or_index_dir, host, port, limits)
  from masksearch_jax.retrieval.tantivy_index import TantivyRetriever
  retriever = TantivyRetriever(retriever_or_index_dir, **retriever_kwargs)
  try:
    return RetrievalServer(retriever, host, port, limits, owns_retriever=True)
  except BaseException:
    retriever.close()
    raise


def _raise_keyboard_interrupt(signum, frame):
  raise KeyboardInterrupt


def serve_forever(index_dir: str | os.PathLike, host: str = "127.0.0.1", port: int = 8000,
                  limits: ServerLimits | None = None, **retriever_kwargs) -> None:
  """Serves `index_dir` until Ctrl-C or SIGTERM (the `serve-index` command)."""
  server = make_server(index_dir, host, port, limits, **retriever_kwargs)
  if threading.current_thread() is threading.main_thread():
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
  print(f"serving {server.retriever.num_passages:,} passages from {index_dir} at {server.url} "
        "(POST /retrieve, GET /health); Ctrl-C to stop", flush=True)
  try:
    server.serve_forever()
  except KeyboardInterrupt:
    print("shutting down", flush=True)
  finally:
    server.server_close()
    server.retriever.close()
