"""HttpRetriever: retries, errors, Search-R1 compatibility, and the real `serve-index` command."""

from __future__ import annotations

import http.server
import json
import re
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests

from masksearch_jax.retrieval import open_retriever
from masksearch_jax.retrieval.client import HttpRetriever, RetrievalError, RetrievalRequestError
from masksearch_jax.retrieval.retriever import SearchHit

REPO_ROOT = Path(__file__).resolve().parents[2]


def _doc(i: int) -> dict:
  return {"id": str(i), "contents": f'"T{i}"\ntext {i}', "title": f"T{i}", "text": f"text {i}"}


class _ScriptedServer(http.server.ThreadingHTTPServer):
  """Answers each request with the next (status, payload, delay) of a script.

  After the script runs out it answers every query with one hit per query.
  """

  daemon_threads = True

  def __init__(self, script):
    self.script = list(script)
    self.requests: list[tuple[str, str, dict | None]] = []
    self.lock = threading.Lock()
    super().__init__(("127.0.0.1", 0), _ScriptedHandler)
    self.thread = threading.Thread(target=self.serve_forever, args=(0.05,), daemon=True)
    self.thread.start()

  @property
  def url(self) -> str:
    return f"http://127.0.0.1:{self.server_address[1]}"

  def close(self) -> None:
    self.shutdown()
    self.server_close()


class _ScriptedHandler(http.server.BaseHTTPRequestHandler):
  protocol_version = "HTTP/1.1"

  def log_message(self, *args) -> None:
    pass  # Quiet: the tests inspect `server.requests` instead.

  def _answer(self) -> None:
    length = int(self.headers.get("Content-Length") or 0)
    body = json.loads(self.rfile.read(length)) if length else None
    with self.server.lock:
      self.server.requests.append((self.command, self.path, body))
      step = self.server.script.pop(0) if self.server.script else None
    if step is None:
      status, delay = 200, 0.0
      if self.path == "/health":
        payload = {"status": "ok", "num_passages": 3}
      else:
        payload = {"result": [[{"document": _doc(i), "score": 1.0}] for i, _ in enumerate(body["queries"])]}
    else:
      status, payload, delay = step
    time.sleep(delay)
    data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    self.send_response(status)
    self.send_header("Content-Type", "application/json")
    self.send_header("Content-Length", str(len(data)))
    self.end_headers()
    self.wfile.write(data)

  do_GET = do_POST = _answer


@pytest.fixture
def scripted():
  servers = []

  def start(*script) -> _ScriptedServer:
    server = _ScriptedServer(script)
    servers.append(server)
    return server

  yield start
  for server in servers:
    server.close()


def _free_port() -> int:
  with socket.socket() as sock:
    sock.bind(("127.0.0.1", 0))
    return sock.getsockname()[1]


def test_flaky_server_fails_twice_then_succeeds(scripted):
  server = scripted((503, {"error": "busy"}, 0), (502, b"<html>bad gateway</html>", 0))
  with HttpRetriever(server.url, max_retries=3, backoff=0.01) as client:
    hits = client.batch_search(["a", "b"], 1)
  assert hits == [[SearchHit("0", "T0", "text 0", 1.0)], [SearchHit("1", "T1", "text 1", 1.0)]]
  assert len(server.requests) == 3
  assert server.requests[0] == ("POST", "/retrieve", {"queries": ["a", "b"], "topk": 1, "return_scores": True})


def test_always_5xx_raises_after_all_retries(scripted):
  server = scripted(*[(503, {"error": "overloaded"}, 0)] * 10)
  start = time.perf_counter()
  with HttpRetriever(server.url, max_retries=2, backoff=0.05) as client:
    with pytest.raises(RetrievalError, match=r"failed after 3 attempt\(s\); last cause: HTTP 503: overloaded") as info:
      client.search("a")
  assert server.url + "/retrieve" in str(info.value)
  assert len(server.requests) == 3
  assert time.perf_counter() - start >= 0.05 + 0.10  # Exponential backoff between attempts.


def test_4xx_raises_at_once_with_the_server_message(scripted):
  server = scripted((400, {"error": "'topk' is 500; the limit is 100"}, 0))
  with HttpRetriever(server.url, max_retries=3, backoff=0.01) as client:
    with pytest.raises(RetrievalRequestError, match=r"HTTP 400: 'topk' is 500; the limit is 100") as info:
      client.search("a", 500)
  assert info.value.status == 400
  assert info.value.server_message == "'topk' is 500; the limit is 100"
  assert len(server.requests) == 1


def test_server_down_raises_after_retries(monkeypatch):
  url = f"http://127.0.0.1:{_free_port()}"
  calls = []
  original = requests.Session.request

  def counting_request(self, method, request_url, **kwargs):
    calls.append(request_url)
    return original(self, method, request_url, **kwargs)

  monkeypatch.setattr(requests.Session, "request", counting_request)
  with HttpRetriever(url, max_retries=2, backoff=0.01, timeout=2) as client:
    with pytest.raises(RetrievalError, match=r"failed after 3 attempt\(s\); last cause: ConnectionError") as info:
      client.search("a")
  assert url + "/retrieve" in str(info.value)
  assert calls == [url + "/retrieve"] * 3


def test_timeout_is_retried_then_raised(scripted):
  server = scripted(*[(200, {"result": [[]]}, 0.6)] * 2)
  start = time.perf_counter()
  with HttpRetriever(server.url, timeout=0.2, max_retries=1, backoff=0.01) as client:
    with pytest.raises(RetrievalError, match=r"after 2 attempt\(s\); last cause: (ReadTimeout|ConnectionError)"):
      client.search("a")
  assert len(server.requests) == 2
  assert time.perf_counter() - start < 1.5  # Did not wait for the slow answers.


def test_malformed_answers(scripted):
  server = scripted((200, b"not json", 0), (200, {"result": [[], []]}, 0), (200, {"result": [[{"doc": 1}]]}, 0))
  with HttpRetriever(server.url, max_retries=0) as client:
    with pytest.raises(RetrievalError, match="invalid JSON"):
      client.search("a")
    with pytest.raises(RetrievalError, match="'result' list of 1 items"):
      client.search("a")
    with pytest.raises(RetrievalError, match="malformed result"):
      client.search("a")


def test_search_r1_contents_only_documents(scripted):
  # Search-R1's own retrieval server sends `id` and `contents` only.
  documents = [{"document": {"id": "7", "contents": '"Paris"\nParis is in France.\nSecond line.'}, "score": 3.5},
               {"document": {"id": "8", "contents": "untitled text"}, "score": 1.0}]
  server = scripted((200, {"result": [documents]}, 0))
  with HttpRetriever(server.url) as client:
    hits = client.search("paris", 2)
  assert hits == [SearchHit("7", "Paris", "Paris is in France.\nSecond line.", 3.5),
                  SearchHit("8", "untitled text", "", 1.0)]


def test_batches_are_split(scripted):
  server = scripted()
  with HttpRetriever(server.url, batch_size=2) as client:
    hits = client.batch_search(["q0", "q1", "q2", "q3", "q4"], 1)
  assert [len(h) for h in hits] == [1] * 5
  assert [body["queries"] for _, _, body in server.requests] == [["q0", "q1"], ["q2", "q3"], ["q4"]]
  with HttpRetriever(server.url) as client:
    assert client.batch_search([], 3) == []
  assert len(server.requests) == 3  # An empty batch sends nothing.


def test_health_and_validation(scripted):
  server = scripted()
  with HttpRetriever(server.url + "/") as client:
    assert client.health() == {"status": "ok", "num_passages": 3}
    assert server.requests[-1][:2] == ("GET", "/health")
    for bad in (0, -1, 1.5, True):
      with pytest.raises(ValueError, match="top_k must be a positive integer"):
        client.batch_search(["a"], bad)
    with pytest.raises(TypeError, match="not one string"):
      client.batch_search("abc", 1)
  with pytest.raises(ValueError):
    HttpRetriever(server.url, max_retries=-1)
  with pytest.raises(ValueError):
    HttpRetriever(server.url, batch_size=0)


def test_client_is_usable_from_threads(scripted):
  server = scripted()
  client = open_retriever(url=server.url)
  assert isinstance(client, HttpRetriever)
  results: list = []
  threads = [threading.Thread(target=lambda: results.append(client.batch_search(["x"] * 3, 1))) for _ in range(6)]
  for t in threads:
    t.start()
  for t in threads:
    t.join()
  assert len(results) == 6 and all(len(r) == 3 for r in results)
  client.close()
  client.close()


def _read_line(proc: subprocess.Popen, timeout: float) -> str:
  with selectors.DefaultSelector() as selector:
    selector.register(proc.stdout, selectors.EVENT_READ)
    if not selector.select(timeout):
      raise AssertionError(f"no output from {proc.args} within {timeout} s")
  return proc.stdout.readline()


def test_serve_index_command(index_dir, retriever):
  proc = subprocess.Popen(
      [sys.executable, "-m", "masksearch_jax", "serve-index", "--index", index_dir, "--port", "0",
       "--max_topk", "7", "--max_queries", "4"],
      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO_ROOT)
  try:
    line = _read_line(proc, timeout=60)
    match = re.search(r"http://127\.0\.0\.1:(\d+)", line)
    assert match, f"serve-index printed {line!r}"
    with HttpRetriever(match.group(0), batch_size=4) as client:
      assert client.health()["num_passages"] == retriever.num_passages
      queries = ["capital of france", "foo", "zanzibar", "seine", "Καλημέρα", "(foo"]
      got = client.batch_search(queries, 3)  # Two requests: the server takes 4 queries at most.
      want = retriever.batch_search(queries, 3)
      assert [[h.id for h in hits] for hits in got] == [[h.id for h in hits] for hits in want]
      with pytest.raises(RetrievalRequestError, match="limit is 7"):
        client.search("paris", 8)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "shutting down" in out
  finally:
    if proc.poll() is None:
      proc.kill()
      proc.wait()
