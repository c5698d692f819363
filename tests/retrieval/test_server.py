"""The HTTP server: Search-R1's /retrieve protocol, limits, errors, concurrency."""

from __future__ import annotations

import http.client
import json
import socket
import threading

import pytest
import requests

from masksearch_jax.retrieval.client import HttpRetriever
from masksearch_jax.retrieval.retriever import Retriever, SearchHit
from masksearch_jax.retrieval.server import RetrievalServer, ServerLimits, make_server

LIMITS = ServerLimits(max_queries=16, max_query_chars=10_000, max_topk=10, max_body_bytes=300_000)
DOC_KEYS = {"id", "contents", "title", "text"}


@pytest.fixture(scope="module")
def server(retriever):
  with make_server(retriever, port=0, limits=LIMITS).start() as s:
    yield s


@pytest.fixture
def url(server):
  yield server.url
  # Whatever the test sent, the server still answers correctly afterwards.
  answer = requests.post(server.url + "/retrieve", json={"queries": ["capital of france"], "topk": 1},
                         timeout=10)
  assert answer.status_code == 200
  assert answer.json()["result"][0][0]["id"] == "p-paris-1"


def _post(url: str, payload, **kwargs) -> requests.Response:
  return requests.post(url + "/retrieve", json=payload, timeout=10, **kwargs)


def _assert_error(response: requests.Response, status: int, *fragments: str) -> None:
  assert response.status_code == status, response.text
  assert response.headers["Content-Type"].startswith("application/json")
  error = response.json()["error"]
  for fragment in fragments:
    assert fragment in error, error


def _raw_request(server: RetrievalServer, data: bytes) -> tuple[int, dict]:
  """Sends raw bytes; returns the status and JSON body of the answer."""
  with socket.create_connection(server.server_address[:2], timeout=10) as sock:
    sock.sendall(data)
    sock.shutdown(socket.SHUT_WR)
    chunks = []
    while chunk := sock.recv(65536):
      chunks.append(chunk)
  head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
  status = int(head.split(b" ", 2)[1])
  return status, json.loads(body)


def test_binds_loopback_by_default(server):
  assert server.server_address[0] == "127.0.0.1"
  assert server.url.startswith("http://127.0.0.1:")


def test_health(url, retriever):
  answer = requests.get(url + "/health", timeout=10)
  assert answer.status_code == 200
  payload = answer.json()
  assert payload["status"] == "ok"
  assert payload["num_passages"] == retriever.num_passages
  assert payload["limits"] == {"max_queries": 16, "max_query_chars": 10_000, "max_topk": 10,
                               "max_body_bytes": 300_000}


def test_retrieve_with_scores_exact_shape(url, retriever):
  answer = _post(url, {"queries": ["paris france", "foo"], "topk": 2, "return_scores": True})
  assert answer.status_code == 200
  payload = answer.json()
  assert set(payload) == {"result"}
  assert len(payload["result"]) == 2
  expected = retriever.batch_search(["paris france", "foo"], 2)
  for items, hits in zip(payload["result"], expected):
    assert len(items) == len(hits) == 2
    for item, hit in zip(items, hits):
      assert set(item) == {"document", "score"}
      assert set(item["document"]) == DOC_KEYS
      assert item["document"] == {"id": hit.id, "contents": f'"{hit.title}"\n{hit.text}', "title": hit.title,
                                  "text": hit.text}
      assert item["score"] == pytest.approx(hit.score)
    assert items[0]["score"] >= items[1]["score"]
  assert payload["result"][0][0]["document"]["id"] == "p-paris-1"


def test_retrieve_without_scores_gives_documents(url):
  answer = _post(url, {"queries": ["paris"], "topk": 2, "return_scores": False})
  items = answer.json()["result"][0]
  assert len(items) == 2
  for item in items:
    assert set(item) == DOC_KEYS
    assert item["contents"] == f'"{item["title"]}"\n{item["text"]}'


def test_defaults_and_unknown_fields(url):
  payload = _post(url, {"queries": ["paris seine foo zanzibar"], "extra": {"ignored": True}}).json()
  assert len(payload["result"][0]) == 3  # topk defaults to 3, like Search-R1.
  assert "document" not in payload["result"][0][0]  # return_scores defaults to false.
  assert len(_post(url, {"queries": ["paris seine foo"], "topk": None}).json()["result"][0]) == 3
  assert _post(url, {"queries": []}).json() == {"result": []}
  assert _post(url, {"queries": ["", "()"], "topk": 5}).json() == {"result": [[], []]}


def test_unicode_round_trip(url):
  items = _post(url, {"queries": ["東京 Καλημέρα"], "topk": 1}).json()["result"][0]
  assert items[0]["id"] == "p-unicode"
  assert "🎉" in items[0]["text"]


def test_nasty_queries(url, nasty_query):
  answer = _post(url, {"queries": [nasty_query[:10_000]], "topk": 3, "return_scores": True})
  assert answer.status_code == 200, answer.text
  assert len(answer.json()["result"]) == 1


def test_lone_surrogate_escape(url):
  body = b'{"queries": ["paris \\ud800 seine"], "topk": 1}'
  answer = requests.post(url + "/retrieve", data=body, headers={"Content-Type": "application/json"}, timeout=10)
  assert answer.status_code == 200
  assert answer.json()["result"][0][0]["id"] in {"p-seine", "p-paris-1"}


@pytest.mark.parametrize("body, fragment", [
    (b"{not json", "not valid JSON"),
    (b"", "not valid JSON"),
    (b"\xff\xfe\x00garbage", "not valid JSON"),
    (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
    (b'["paris"]', "must be a JSON object"),
    (b"null", "must be a JSON object"),
    (b'{"topk": 3}', "missing field 'queries'"),
])
def test_malformed_bodies(url, body, fragment):
  _assert_error(requests.post(url + "/retrieve", data=body, timeout=10), 400, fragment)


@pytest.mark.parametrize("payload, fragment", [
    ({"queries": "paris"}, "'queries' must be a list of strings"),
    ({"queries": None}, "'queries' must be a list of strings"),
    ({"queries": ["ok", 3]}, "'queries'[1] must be a string"),
    ({"queries": [["nested"]]}, "'queries'[0] must be a string"),
    ({"queries": ["a"], "topk": "3"}, "'topk' must be a positive integer"),
    ({"queries": ["a"], "topk": 2.5}, "'topk' must be a positive integer"),
    ({"queries": ["a"], "topk": True}, "'topk' must be a positive integer"),
    ({"queries": ["a"], "topk": 0}, "'topk' must be a positive integer"),
    ({"queries": ["a"], "topk": -4}, "'topk' must be a positive integer"),
    ({"queries": ["a"], "return_scores": "yes"}, "'return_scores' must be true or false"),
    ({"queries": ["a"], "return_scores": 1}, "'return_scores' must be true or false"),
])
def test_wrong_types(url, payload, fragment):
  _assert_error(_post(url, payload), 400, fragment)


def test_topk_over_limit(url):
  _assert_error(_post(url, {"queries": ["a"], "topk": 11}), 400, "'topk' is 11", "limit is 10")
  assert _post(url, {"queries": ["paris seine foo zanzibar"], "topk": 10}).status_code == 200


def test_too_many_queries(url):
  _assert_error(_post(url, {"queries": ["a"] * 17}), 413, "17 queries", "limit is 16")
  assert _post(url, {"queries": ["a"] * 16}).status_code == 200


def test_query_too_long(url):
  _assert_error(_post(url, {"queries": ["ok", "x" * 10_001]}), 413, "'queries'[1] has 10001 characters",
                "limit is 10000")
  assert _post(url, {"queries": ["x" * 10_000]}).status_code == 200


def test_huge_body_is_refused_without_reading_it(server, url):
  # Only the headers are sent: the server must answer from Content-Length alone.
  status, payload = _raw_request(
      server, b"POST /retrieve HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
              b"Content-Length: 10000000000\r\n\r\n")
  assert status == 413
  assert "10000000000 bytes" in payload["error"] and "limit is 300000" in payload["error"]


def test_body_just_over_limit(url):
  body = json.dumps({"queries": ["a"], "pad": "x" * 300_000}).encode()
  _assert_error(requests.post(url + "/retrieve", data=body, timeout=10), 413, "limit is 300000")


def test_missing_content_length(server, url):
  status, payload = _raw_request(server, b"POST /retrieve HTTP/1.1\r\nHost: x\r\n\r\n")
  assert status == 411 and "Content-Length" in payload["error"]


def test_chunked_body_refused(server, url):
  status, payload = _raw_request(
      server, b"POST /retrieve HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
              b"5\r\nhello\r\n0\r\n\r\n")
  assert status == 411 and "chunked" in payload["error"]


def test_bad_content_length(server, url):
  status, payload = _raw_request(server, b"POST /retrieve HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n")
  assert status == 400 and "Content-Length" in payload["error"]


def test_truncated_body(server, url):
  status, payload = _raw_request(
      server, b'POST /retrieve HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{"queries": [')
  assert status == 400 and "ended after 13 of 100 bytes" in payload["error"]


def test_garbage_request_line(server, url):
  status, payload = _raw_request(server, b"THIS IS NOT HTTP\r\n\r\n")
  assert status == 400 and payload["error"]


def test_unknown_path(url):
  _assert_error(requests.get(url + "/nope", timeout=10), 404, "unknown path '/nope'")
  _assert_error(requests.post(url + "/search", json={"queries": ["a"]}, timeout=10), 404, "/search")


@pytest.mark.parametrize("method, path, allowed", [
    ("GET", "/retrieve", "POST"),
    ("PUT", "/retrieve", "POST"),
    ("DELETE", "/retrieve", "POST"),
    ("POST", "/health", "GET"),
    ("PATCH", "/health", "GET"),
    ("BREW", "/retrieve", "POST"),
])
def test_wrong_method(url, method, path, allowed):
  answer = requests.request(method, url + path, json={"queries": ["a"]}, timeout=10)
  _assert_error(answer, 405, f"method {method} not allowed", f"use {allowed}")
  assert answer.headers["Allow"] == allowed


def test_keep_alive_survives_client_errors(url):
  with requests.Session() as session:
    for _ in range(3):
      assert session.post(url + "/retrieve", data=b"{bad", timeout=10).status_code == 400
      assert session.post(url + "/retrieve", json={"queries": ["a"], "topk": 99}, timeout=10).status_code == 400
      ok = session.post(url + "/retrieve", json={"queries": ["foo"], "topk": 1}, timeout=10)
      assert ok.json()["result"][0][0]["id"] == "p-foo2"
      assert ok.headers.get("Connection", "keep-alive").lower() != "close"


def test_concurrent_clients(url, retriever):
  queries = ["paris", "foo", "zanzibar", "seine river", "capital of france", "Καλημέρα", "", "(foo"]
  expected = retriever.batch_search(queries, 3)
  errors: list[BaseException] = []

  def client(seed: int) -> None:
    try:
      with HttpRetriever(url, timeout=20) as http_retriever:
        for i in range(20):
          shift = (seed + i) % len(queries)
          batch = queries[shift:] + queries[:shift]
          got = http_retriever.batch_search(batch, 3)
          want = expected[shift:] + expected[:shift]
          assert [[(h.id, h.title, h.text) for h in hits] for hits in got] == \
                 [[(h.id, h.title, h.text) for h in hits] for hits in want]
    except BaseException as e:  # Reported by the main thread below.
      errors.append(e)

  threads = [threading.Thread(target=client, args=(s,)) for s in range(8)]
  for t in threads:
    t.start()
  for t in threads:
    t.join()
  assert errors == []


def test_http_and_in_process_retrievers_agree(url, retriever):
  queries = ["capital of france", "foo", "zanzibar", "nothing-here-xyzzy"]
  with HttpRetriever(url) as http_retriever:
    assert isinstance(http_retriever, Retriever)
    over_http = http_retriever.batch_search(queries, 4)
  in_process = retriever.batch_search(queries, 4)
  assert [[(h.id, h.title, h.text) for h in hits] for hits in over_http] == \
         [[(h.id, h.title, h.text) for h in hits] for hits in in_process]
  for a, b in zip(over_http, in_process):
    assert [h.score for h in a] == pytest.approx([h.score for h in b])


class _ExplodingRetriever(Retriever):
  """Fails on the query 'explode'; otherwise returns one fixed hit."""

  num_passages = 1

  def batch_search(self, queries, top_k=5):
    if "explode" in queries:
      raise RuntimeError("disk on fire")
    return [[SearchHit("1", "T", "x", 1.0)] for _ in queries]


def test_internal_error_is_500_json_and_server_survives(caplog):
  with make_server(_ExplodingRetriever()).start() as s:
    answer = requests.post(s.url + "/retrieve", json={"queries": ["explode"]}, timeout=10)
    assert answer.status_code == 500
    assert answer.json()["error"] == "internal error: RuntimeError: disk on fire"
    assert "internal error serving /retrieve" in caplog.text
    ok = requests.post(s.url + "/retrieve", json={"queries": ["fine"]}, timeout=10)
    assert ok.json() == {"result": [[{"id": "1", "contents": '"T"\nx', "title": "T", "text": "x"}]]}


def test_make_server_from_index_dir_owns_retriever(index_dir):
  server = make_server(index_dir, limits=ServerLimits(max_topk=5))
  server.start()
  try:
    assert requests.get(server.url + "/health", timeout=10).json()["num_passages"] > 0
  finally:
    server.stop()
  with pytest.raises(RuntimeError, match="closed"):
    server.retriever.search("paris")


def test_limits_validation():
  with pytest.raises(ValueError, match="max_queries"):
    ServerLimits(max_queries=0)
  assert ServerLimits().body_bytes > 512 * 10_000 * 6


def test_http_client_low_level_keepalive(server, url):
  # One connection, several requests: HTTP/1.1 keep-alive works end to end.
  connection = http.client.HTTPConnection(*server.server_address[:2], timeout=10)
  try:
    for query in ["paris", "foo", "seine"]:
      body = json.dumps({"queries": [query], "topk": 1})
      connection.request("POST", "/retrieve", body=body, headers={"Content-Type": "application/json"})
      response = connection.getresponse()
      assert response.status == 200
      assert len(json.loads(response.read())["result"][0]) == 1
  finally:
    connection.close()
