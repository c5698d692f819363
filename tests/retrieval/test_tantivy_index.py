"""Index building (atomic, refuses/overwrites, survives SIGKILL) and in-process search."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
import tantivy

from masksearch_jax.data.passage import Passage
from masksearch_jax.retrieval import open_retriever
from masksearch_jax.retrieval.retriever import SearchHit
from masksearch_jax.retrieval.tantivy_index import (MANIFEST_NAME, IncompleteIndexError, IndexBuildSummary,
                                                    TantivyRetriever, build_index, read_manifest)

REPO_ROOT = Path(__file__).resolve().parents[2]


def _small(prefix: str, n: int = 5) -> list[Passage]:
  return [Passage(f"{prefix}-{i}", f"{prefix} title {i}", f"{prefix} body text number {i}") for i in range(n)]


def _ids(hits: list[SearchHit]) -> list[str]:
  return [h.id for h in hits]


# ---------------------------------------------------------------- building


def test_build_writes_manifest_and_summary(tmp_path, passages, capsys):
  target = tmp_path / "idx"
  summary = build_index(passages, target, num_threads=2, progress=True)
  assert isinstance(summary, IndexBuildSummary)
  assert summary.num_passages == len(passages)
  assert summary.index_dir == str(target)
  assert summary.seconds > 0 and summary.passages_per_second > 0
  captured = capsys.readouterr()
  assert f"indexed {len(passages)} passages in " in captured.out
  assert "passages/s) -> " + str(target) in captured.out
  assert "indexing" in captured.err or "committing" in captured.err  # The progress bar.
  manifest = read_manifest(target)
  assert manifest["num_passages"] == len(passages)
  assert manifest["schema_version"] == 1
  assert manifest["tantivy_version"]
  assert manifest["built_at"]
  assert os.listdir(tmp_path) == ["idx"]  # No temp dirs left beside it.


def test_build_from_generator_without_progress(tmp_path, capsys):
  summary = build_index((p for p in _small("gen", 7)), tmp_path / "idx", progress=False)
  assert summary.num_passages == 7
  assert capsys.readouterr().err == ""
  with TantivyRetriever(tmp_path / "idx") as r:
    assert r.num_passages == 7


def test_build_empty_corpus(tmp_path):
  summary = build_index([], tmp_path / "idx", progress=False)
  assert summary.num_passages == 0
  with TantivyRetriever(tmp_path / "idx") as r:
    assert r.num_passages == 0
    assert r.search("anything") == []


def test_refuses_existing_index(tmp_path):
  target = tmp_path / "idx"
  build_index(_small("old"), target, progress=False)
  with pytest.raises(FileExistsError, match=r"already exists; pass --overwrite") as info:
    build_index(_small("new"), target, progress=False)
  assert str(target) in str(info.value)
  with TantivyRetriever(target) as r:  # Untouched.
    assert r.search("old")[0].id.startswith("old-")
    assert r.search("new") == []


def test_overwrite_rebuilds(tmp_path):
  target = tmp_path / "idx"
  build_index(_small("old"), target, progress=False)
  build_index(_small("new", 3), target, overwrite=True, progress=False)
  with TantivyRetriever(target) as r:
    assert r.num_passages == 3
    assert r.search("old") == []
    assert r.search("new")[0].id.startswith("new-")
  assert sorted(os.listdir(tmp_path)) == ["idx"]


def test_overwrite_refuses_a_directory_that_is_not_an_index(tmp_path):
  target = tmp_path / "precious"
  target.mkdir()
  (target / "thesis.tex").write_text("do not delete")
  with pytest.raises(FileExistsError, match="does not look like an index"):
    build_index(_small("x"), target, overwrite=True, progress=False)
  assert (target / "thesis.tex").read_text() == "do not delete"


def test_refuses_a_file(tmp_path):
  target = tmp_path / "file"
  target.write_text("x")
  with pytest.raises(FileExistsError, match="not a directory"):
    build_index(_small("x"), target, overwrite=True, progress=False)


def test_empty_existing_directory_is_used(tmp_path):
  target = tmp_path / "idx"
  target.mkdir()
  build_index(_small("x"), target, progress=False)
  assert read_manifest(target)["num_passages"] == 5


def test_failing_reader_leaves_nothing(tmp_path):
  def broken():
    yield from _small("a")
    raise RuntimeError("corpus exploded")

  with pytest.raises(RuntimeError, match="corpus exploded"):
    build_index(broken(), tmp_path / "idx", progress=False)
  assert os.listdir(tmp_path) == []


def test_failing_overwrite_keeps_the_old_index(tmp_path):
  target = tmp_path / "idx"
  build_index(_small("old"), target, progress=False)

  def broken():
    yield from _small("new")
    raise KeyboardInterrupt

  with pytest.raises(KeyboardInterrupt):
    build_index(broken(), target, overwrite=True, progress=False)
  assert os.listdir(tmp_path) == ["idx"]
  with TantivyRetriever(target) as r:
    assert r.num_passages == 5 and r.search("old")


# ------------------------------------------------------ opening and SIGKILL


def test_open_missing_directory(tmp_path):
  with pytest.raises(FileNotFoundError, match="no index directory"):
    TantivyRetriever(tmp_path / "nope")


def test_open_tantivy_index_without_manifest(tmp_path):
  target = tmp_path / "bare"
  target.mkdir()
  index = tantivy.Index(tantivy.SchemaBuilder().build(), str(target))
  del index
  assert (target / "meta.json").exists()
  with pytest.raises(IncompleteIndexError, match=r"not a complete masksearch index.*interrupted build"):
    TantivyRetriever(target)


def test_open_with_manifest_count_mismatch(tmp_path):
  target = tmp_path / "idx"
  build_index(_small("x"), target, progress=False)
  manifest_path = target / MANIFEST_NAME
  manifest = json.loads(manifest_path.read_text())
  manifest["num_passages"] = 6
  manifest_path.write_text(json.dumps(manifest))
  with pytest.raises(IncompleteIndexError, match="holds 5 passages but its manifest says 6"):
    TantivyRetriever(target)


_KILLED_BUILD = textwrap.dedent("""
    import sys, time
    from masksearch_jax.data.passage import Passage
    from masksearch_jax.retrieval.tantivy_index import build_index

    def passages():
      for i in range(30_000):
        yield Passage(f"new-{i}", f"New {i}", "fresh words " * 30 + str(i))
        if i == 20_000:
          print("HALFWAY", flush=True)
          time.sleep(600)

    # A small heap makes the writer flush segments to disk before the kill.
    build_index(passages(), sys.argv[1], overwrite=sys.argv[2] == "1", num_threads=1,
                heap_size_bytes=16_000_000, progress=False)
""")


def _build_and_kill(target: Path, overwrite: bool) -> None:
  proc = subprocess.Popen([sys.executable, "-c", _KILLED_BUILD, str(target), "1" if overwrite else "0"],
                          stdout=subprocess.PIPE, cwd=REPO_ROOT, text=True)
  try:
    line = proc.stdout.readline()
    assert line.strip() == "HALFWAY", f"build subprocess said {line!r}"
    proc.send_signal(signal.SIGKILL)
  finally:
    proc.kill()
    proc.wait(timeout=30)
  assert proc.returncode == -signal.SIGKILL


def test_sigkilled_build_never_opens_as_whole(tmp_path):
  target = tmp_path / "idx"
  _build_and_kill(target, overwrite=False)
  assert not target.exists()
  leftovers = [p for p in tmp_path.iterdir() if p != target]
  assert len(leftovers) == 1 and ".building-" in leftovers[0].name
  assert any(leftovers[0].iterdir()), "the killed build should have written files"
  with pytest.raises(FileNotFoundError):
    TantivyRetriever(target)
  with pytest.raises(IncompleteIndexError, match="interrupted build"):
    TantivyRetriever(leftovers[0])

  build_index(_small("fresh"), target, progress=False)  # Rebuilding works and tidies up.
  assert os.listdir(tmp_path) == ["idx"]
  with TantivyRetriever(target) as r:
    assert r.num_passages == 5


def test_sigkilled_overwrite_keeps_the_old_index(tmp_path):
  target = tmp_path / "idx"
  build_index(_small("old"), target, progress=False)
  _build_and_kill(target, overwrite=True)
  with TantivyRetriever(target) as r:
    assert r.num_passages == 5
    assert r.search("old title 3", 1)[0].id == "old-3"
  build_index(_small("new", 2), target, overwrite=True, progress=False)
  assert os.listdir(tmp_path) == ["idx"]
  with TantivyRetriever(target) as r:
    assert r.num_passages == 2


# ------------------------------------------------------------------ search


def test_search_returns_fields_and_scores(retriever):
  hits = retriever.search("capital of France", top_k=3)
  assert hits[0] == SearchHit("p-paris-1", "Paris", "Paris is the capital of France and sits on the river Seine.",
                              hits[0].score)
  assert isinstance(hits[0].score, float) and hits[0].score > 0
  assert hits[0].contents == '"Paris"\nParis is the capital of France and sits on the river Seine.'


def test_top_k_and_descending_scores(retriever):
  for k in (1, 2, 3, 5, 50):
    hits = retriever.search("paris seine foo zanzibar", top_k=k)
    assert len(hits) == min(k, 7)
    scores = [h.score for h in hits]
    assert scores == sorted(scores, reverse=True)
  assert set(_ids(retriever.search("paris", 10))) == {"p-paris-1", "p-paris-2", "p-seine"}


def test_term_frequency_ranks(retriever):
  assert _ids(retriever.search("foo", 5)) == ["p-foo2", "p-foo"]


def test_matches_raw_tantivy_scores(index_dir):
  index = tantivy.Index.open(index_dir)
  searcher = index.searcher()
  with TantivyRetriever(index_dir, stopwords=None) as retriever:
    for query in ["capital of france", "paris seine", "foo", "the river", "zanzibar island"]:
      raw = searcher.search(index.parse_query(query, ["title", "text"]), 5)
      expected = [(searcher.doc(addr).get_first("id"), score) for score, addr in raw.hits]
      got = [(h.id, h.score) for h in retriever.search(query, 5)]
      assert [i for i, _ in got] == [i for i, _ in expected]
      assert [s for _, s in got] == pytest.approx([s for _, s in expected], rel=1e-6)


def test_stopwords_are_ignored_unless_alone(retriever, index_dir):
  assert retriever.search("the capital of France", 3) == retriever.search("capital France", 3)
  assert retriever.search("AND OR NOT", 1)[0].id == "p-and"  # Only stop words: all are kept.
  with TantivyRetriever(index_dir, stopwords=None) as plain:
    assert plain.search("the capital of France", 3) != plain.search("capital France", 3)
  with TantivyRetriever(index_dir, stopwords={"Seine"}) as custom:
    assert custom.search("seine river", 5) == custom.search("river", 5)
    assert custom.search("seine", 5)[0].id == "p-seine"  # Alone, a stop word still searches.


def test_title_boost(index_dir):
  with TantivyRetriever(index_dir, title_boost=1.0) as plain, \
       TantivyRetriever(index_dir, title_boost=5.0) as boosted:
    assert plain.search("zanzibar", 1)[0].id == "p-text-zanzibar"
    assert boosted.search("zanzibar", 1)[0].id == "p-title-only"
  with pytest.raises(ValueError, match="title_boost"):
    TantivyRetriever(index_dir, title_boost=0)


def test_batch_search_matches_single_searches(retriever, index_dir):
  queries = ["paris", "", "foo", "(foo", "zanzibar", "nothing-matches-xyzzy", "seine"] * 10
  expected = [retriever.search(q, 4) for q in queries]
  assert retriever.batch_search(queries, 4) == expected
  with TantivyRetriever(index_dir, num_threads=1) as sequential, \
       TantivyRetriever(index_dir, num_threads=4) as parallel:
    assert sequential.batch_search(queries, 4) == expected
    assert parallel.batch_search(queries, 4) == expected
  assert retriever.batch_search([], 3) == []


def test_unicode_and_tokenizer_edge_cases(retriever):
  assert retriever.search("東京", 1)[0].id == "p-unicode"
  assert retriever.search("ΚΑΛΗΜΈΡΑ", 1)[0].id == "p-unicode"
  assert retriever.search("İstanbul", 1)[0].id == "p-istanbul"
  assert retriever.search("snake", 1)[0].id == "p-underscore"


def test_nasty_queries_never_raise(retriever, nasty_query):
  hits = retriever.search(nasty_query, 5)
  assert len(hits) <= 5
  assert all(isinstance(h, SearchHit) for h in hits)


def test_nasty_queries_find_sensible_hits(retriever):
  for query in ["(foo", "foo)", "title:foo", '"foo', "foo^2", "foo~2", "foo*", "[foo", "{foo}"]:
    assert _ids(retriever.search(query, 5)) == ["p-foo2", "p-foo"], query
  assert retriever.search("AND OR NOT", 1)[0].id == "p-and"
  assert retriever.search("", 5) == []
  assert retriever.search("()[]:^~*", 5) == []
  assert retriever.search("(" * 5000 + "seine" + ")" * 10, 1)[0].id in {"p-seine", "p-paris-1"}
  assert len(retriever.search(" ".join(f"w{i}" for i in range(10_000)) + " paris", 3)) == 0  # 256-term cap.


def test_top_k_validation(retriever):
  for bad in (0, -1, 2.5, True, "3", None):
    with pytest.raises(ValueError, match="top_k must be a positive integer"):
      retriever.batch_search(["paris"], bad)
  with pytest.raises(TypeError, match="not one string"):
    retriever.batch_search("paris", 3)
  with pytest.raises(TypeError, match="must be a string"):
    retriever.batch_search([None], 3)


def test_concurrent_searches_from_threads(retriever):
  queries = ["paris", "foo", "zanzibar", "seine river", "capital", "Καλημέρα"]
  expected = {q: retriever.search(q, 3) for q in queries}
  errors: list[BaseException] = []

  def worker(seed: int) -> None:
    try:
      for i in range(40):
        query = queries[(seed + i) % len(queries)]
        if i % 2:
          assert retriever.batch_search([query] * 9, 3) == [expected[query]] * 9
        else:
          assert retriever.search(query, 3) == expected[query]
    except BaseException as e:  # Reported by the main thread below.
      errors.append(e)

  threads = [threading.Thread(target=worker, args=(s,)) for s in range(8)]
  for t in threads:
    t.start()
  for t in threads:
    t.join()
  assert errors == []


def test_open_retriever_and_close(index_dir):
  r = open_retriever(index=index_dir)
  assert isinstance(r, TantivyRetriever)
  assert r.num_passages > 0
  r.batch_search(["paris"] * 20, 2)
  r.close()
  r.close()
  with pytest.raises(RuntimeError, match="closed"):
    r.search("paris")


def test_build_rate_is_reported_for_a_larger_corpus(tmp_path):
  passages = [Passage(str(i), f"T{i % 97}", " ".join(f"w{(i * 7 + j) % 5000}" for j in range(60)))
              for i in range(5000)]
  start = time.perf_counter()
  summary = build_index(passages, tmp_path / "idx", progress=False)
  assert summary.num_passages == 5000
  assert summary.seconds <= time.perf_counter() - start


def test_default_builds_rank_equal_scores_the_same_way(tmp_path):
  """BM25 orders equal scores by document address; with one writer thread (the default) every build
  of a corpus puts each passage at the same address, so seeded searches repeat exactly."""
  corpus = [Passage(f"p{i:05d}", f"Film {i}", f"Film {i} is a film about a river and a town.") for i in range(20000)]
  rankings = []
  for build in range(3):
    build_index(corpus, tmp_path / f"index-{build}", progress=False)
    with TantivyRetriever(tmp_path / f"index-{build}", num_threads=1) as retriever:
      hits = retriever.search("film river town", 10)
    assert len({h.score for h in hits}) == 1  # All tie: only the addresses order them.
    rankings.append([h.id for h in hits])
  assert rankings[0] == rankings[1] == rankings[2]
