"""Build a Tantivy BM25 index of passages on disk, and search it in process.

An index directory is complete only when it holds the manifest
`masksearch_index.json`. `build_index` writes everything into a temporary
sibling directory, writes the manifest last, and renames the directory into
place, so an interrupted build never leaves something that opens as whole.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import datetime
import importlib.metadata
import json
import logging
import os
import re
import shutil
import sys
import threading
import time
import traceback
import uuid
from pathlib import Path
from typing import Iterable, Sequence

import tantivy

from masksearch_jax.data.passage import Passage
from masksearch_jax.retrieval.query import DEFAULT_MAX_TERMS, ENGLISH_STOPWORDS, search_terms
from masksearch_jax.retrieval.retriever import Retriever, SearchHit

logger = logging.getLogger(__name__)

MANIFEST_NAME = "masksearch_index.json"
SCHEMA_VERSION = 1
SEARCH_FIELDS = ("title", "text")
# Per writer thread. Measured on 100k passages: 100 MB per thread is at the
# plateau of passages/s; more only adds memory.
DEFAULT_HEAP_BYTES_PER_THREAD = 100_000_000
_MIN_HEAP_BYTES_PER_THREAD = 16_000_000
# Bytes of stored documents compressed together. Every hit fetched decompresses
# its whole block, so Tantivy's default of 16 KB made fetching the 5 hits the
# costliest step of a fact look-up. Measured on 100k generated passages (2 cores,
# benchmarks/retrieval.py): 4 KB blocks made single-thread fact look-ups ~20%
# faster (9,200 -> 11,200 q/s; questions +7%) for a 7% larger index and no
# slower build; 2 KB and 1 KB blocks gained no more than the noise.
DOCSTORE_BLOCKSIZE = 4096
_PROGRESS_EVERY = 4096
# `.NAME.building-PID-HEX` (a build in progress or killed) and `.NAME.old-PID-HEX`
# (a replaced index being deleted).
_TEMP_RE = re.compile(r"^\.(?P<name>.+)\.(?:building|old)-(?P<pid>\d+)-[0-9a-f]+$")


class IncompleteIndexError(RuntimeError):
  """A directory exists but is not a complete masksearch index."""


@dataclasses.dataclass(frozen=True)
class IndexBuildSummary:
  """What `build_index` did."""

  num_passages: int
  seconds: float
  passages_per_second: float
  index_dir: str

  def __str__(self) -> str:
    return (f"indexed {self.num_passages:,} passages in {self.seconds:.1f} s "
            f"({self.passages_per_second:,.0f} passages/s) -> {self.index_dir}")


def make_schema() -> tantivy.Schema:
  """The index schema: `id` (exact, stored), `title` and `text` (BM25, stored)."""
  builder = tantivy.SchemaBuilder()
  builder.add_text_field("id", stored=True, tokenizer_name="raw")
  builder.add_text_field("title", stored=True, tokenizer_name="default")
  builder.add_text_field("text", stored=True, tokenizer_name="default")
  return builder.build()


def _tantivy_version() -> str:
  try:
    return importlib.metadata.version("tantivy")
  except importlib.metadata.PackageNotFoundError:
    return str(getattr(tantivy, "__version__", "unknown"))


def _default_num_threads() -> int:
  try:
    cpus = len(os.sched_getaffinity(0))
  except AttributeError:  # Not on Linux.
    cpus = os.cpu_count() or 1
  return max(1, min(cpus, 8))


def _pid_alive(pid: int) -> bool:
  if pid == os.getpid():
    return True
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:  # Exists, owned by someone else.
    return True
  return True


def _remove_stale_temp_dirs(target: Path) -> None:
  """Deletes temp dirs that builds of `target` left behind when killed."""
  parent = target.parent
  if not parent.is_dir():
    return
  for entry in parent.iterdir():
    match = _TEMP_RE.match(entry.name)
    if not match or match.group("name") != target.name:
      continue
    if _pid_alive(int(match.group("pid"))):
      continue  # Perhaps a concurrent build; never touch it.
    logger.info("removing leftover of an interrupted build: %s", entry)
    shutil.rmtree(entry)


def _looks_like_index(path: Path) -> bool:
  return (path / MANIFEST_NAME).exists() or (path / "meta.json").exists()


def _check_target(target: Path, overwrite: bool) -> None:
  """Raises if building into `target` must not proceed."""
  if not target.exists() and not target.is_symlink():
    return
  if not target.is_dir():
    raise FileExistsError(f"{target} exists and is not a directory; choose another --index path")
  if not any(target.iterdir()):
    return  # An empty directory is replaced silently.
  if not overwrite:
    raise FileExistsError(
        f"index directory {target} already exists; pass --overwrite (overwrite=True) to rebuild it")
  if not _looks_like_index(target):
    raise FileExistsError(
        f"refusing to overwrite {target}: it is not empty and does not look like an index "
        f"(no {MANIFEST_NAME} or meta.json)")


def _fsync_path(path: Path) -> None:
  fd = os.open(path, os.O_RDONLY)
  try:
    os.fsync(fd)
  finally:
    os.close(fd)


def _install(tmp: Path, target: Path, overwrite: bool) -> None:
  """Moves the finished build `tmp` to `target`, replacing an old index if allowed."""
  _check_target(target, overwrite)
  if target.is_dir() and any(target.iterdir()):
    aside = target.with_name(f".{target.name}.old-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    os.rename(target, aside)
    try:
      os.rename(tmp, target)
    except BaseException:
      os.rename(aside, target)  # Put the old index back before reporting.
      raise
    _fsync_path(target.parent)
    shutil.rmtree(aside)
  else:
    # rename() atomically replaces a missing or empty directory.
    os.rename(tmp, target)
    _fsync_path(target.parent)


def build_index(passages: Iterable[Passage],
                index_dir: str | os.PathLike,
                *,
                overwrite: bool = False,
                num_threads: int = 1,
                heap_size_bytes: int | None = None,
                total: int | None = None,
                progress: bool = True) -> IndexBuildSummary:
  """Indexes `passages` into a new Tantivy index at `index_dir`.

  Args:
    passages: Any iterable of `Passage` (a list, or a corpus reader).
    index_dir: The directory to create.
    overwrite: Replace an existing index at `index_dir`. Without it an existing
      non-empty directory is refused.
    num_threads: Writer threads; 0 uses the available cores (at most 8). One
      thread (the default) gives the same index for the same passages: BM25
      ranks equal scores by document address, and with several threads which
      passage lands where varies between builds (about 4% of a world's top-3
      fact look-ups came out differently), so seeded trajectories, rollouts and
      evaluations would too. Several threads build a large corpus faster.
    heap_size_bytes: Total writer memory; None gives 100 MB per thread.
    total: Number of passages, for the progress bar (taken from `len()` when
      `passages` has one).
    progress: Show a progress bar on stderr.

  Returns:
    An `IndexBuildSummary`, also printed as one line to stdout.

  Raises:
    FileExistsError: `index_dir` exists and `overwrite` is False, or it holds
      something that is not an index.
  """
  target = Path(os.path.abspath(index_dir))
  _check_target(target, overwrite)
  target.parent.mkdir(parents=True, exist_ok=True)
  _remove_stale_temp_dirs(target)

  threads = num_threads if num_threads > 0 else _default_num_threads()
  if heap_size_bytes is None:
    heap_size_bytes = DEFAULT_HEAP_BYTES_PER_THREAD * threads
  heap_size_bytes = max(heap_size_bytes, _MIN_HEAP_BYTES_PER_THREAD * threads)
  if total is None and hasattr(passages, "__len__"):
    total = len(passages)  # type: ignore[arg-type]

  tmp = target.with_name(f".{target.name}.building-{os.getpid()}-{uuid.uuid4().hex[:8]}")
  tmp.mkdir()
  start = time.perf_counter()
  try:
    count = _write_index(passages, tmp, threads, heap_size_bytes, total, progress)
    seconds = time.perf_counter() - start
    manifest = {
        "format": "masksearch_index",
        "schema_version": SCHEMA_VERSION,
        "num_passages": count,
        "tantivy_version": _tantivy_version(),
        "built_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "build_seconds": round(seconds, 3),
        "fields": {"id": "raw, stored", "title": "default, stored", "text": "default, stored"},
    }
    # The manifest is what marks the directory complete, so it goes last.
    with open(tmp / MANIFEST_NAME, "w", encoding="utf-8") as f:
      json.dump(manifest, f, indent=2)
      f.write("\n")
      f.flush()
      os.fsync(f.fileno())
    _fsync_path(tmp)
    _install(tmp, target, overwrite)
  except BaseException as e:
    # The traceback keeps `_write_index`'s frame, hence the Tantivy writer and
    # its threads, alive; dropping its locals stops them writing into `tmp`.
    traceback.clear_frames(e.__traceback__)
    if tmp.exists():
      shutil.rmtree(tmp, onerror=_log_rmtree_error)
    raise

  summary = IndexBuildSummary(num_passages=count, seconds=seconds,
                              passages_per_second=count / seconds if seconds > 0 else 0.0,
                              index_dir=str(target))
  print(summary, flush=True)
  return summary


def _write_index(passages: Iterable[Passage], path: Path, threads: int, heap_size_bytes: int,
                 total: int | None, progress: bool) -> int:
  """Writes and commits a Tantivy index of `passages` at `path`; returns their number."""
  from tqdm import tqdm

  tantivy.Index(make_schema(), str(path), reuse=False)
  # The binding takes no index settings, but Tantivy reads them from meta.json
  # when it opens an index; readers need no setting to read any block size.
  _set_docstore_blocksize(path / "meta.json", DOCSTORE_BLOCKSIZE)
  index = tantivy.Index.open(str(path))
  writer = index.writer(heap_size_bytes, threads)
  add_document = writer.add_document
  document = tantivy.Document
  count = 0
  with tqdm(total=total, disable=not progress, unit=" passages", unit_scale=True,
            desc="indexing", mininterval=0.5, file=sys.stderr) as bar:
    for passage in passages:
      add_document(document(id=passage.id, title=passage.title, text=passage.text))
      count += 1
      if count % _PROGRESS_EVERY == 0:
        bar.update(_PROGRESS_EVERY)
    bar.update(count % _PROGRESS_EVERY)
    bar.set_description_str("committing")
    writer.commit()
    writer.wait_merging_threads()
  return count


def _set_docstore_blocksize(meta_path: Path, blocksize: int) -> None:
  """Sets the doc store block size in a new, empty index's meta.json."""
  with open(meta_path, encoding="utf-8") as f:
    meta = json.load(f)
  settings = meta.get("index_settings")
  if not isinstance(settings, dict) or "docstore_blocksize" not in settings:
    logger.warning("%s has no index_settings.docstore_blocksize (a newer Tantivy?); keeping its default "
                   "doc store block size", meta_path)
    return
  settings["docstore_blocksize"] = blocksize
  with open(meta_path, "w", encoding="utf-8") as f:
    json.dump(meta, f)


def _log_rmtree_error(function, path, exc_info) -> None:
  # Cleanup after a failed build must not mask the build's own error.
  logger.warning("could not remove %s (%s): %s", path, function.__name__, exc_info[1])


def read_manifest(index_dir: str | os.PathLike) -> dict:
  """Returns the manifest of a complete index.

  Raises:
    FileNotFoundError: `index_dir` does not exist.
    IncompleteIndexError: `index_dir` is not a complete masksearch index.
  """
  path = Path(index_dir)
  if not path.is_dir():
    raise FileNotFoundError(f"no index directory at {path}")
  manifest_path = path / MANIFEST_NAME
  if not manifest_path.is_file():
    raise IncompleteIndexError(
        f"not a complete masksearch index: {path} has no {MANIFEST_NAME} "
        f"(interrupted build? rebuild it with `masksearch build-index --overwrite`)")
  try:
    with open(manifest_path, encoding="utf-8") as f:
      manifest = json.load(f)
  except (OSError, ValueError) as e:
    raise IncompleteIndexError(f"not a complete masksearch index: {manifest_path} is unreadable: {e}") from e
  if not isinstance(manifest, dict) or manifest.get("format") != "masksearch_index":
    raise IncompleteIndexError(f"not a masksearch index manifest: {manifest_path}")
  if manifest.get("schema_version") != SCHEMA_VERSION:
    raise IncompleteIndexError(
        f"{path} has index schema version {manifest.get('schema_version')}, this code reads "
        f"version {SCHEMA_VERSION}; rebuild it with `masksearch build-index --overwrite`")
  return manifest


class TantivyRetriever(Retriever):
  """BM25 search over an index built by `build_index`, in this process.

  Thread-safe: the server calls `batch_search` from many threads at once.

  Args:
    index_dir: A directory written by `build_index`.
    title_boost: Multiplies the BM25 score of title matches (1.0: title and
      text count alike).
    num_threads: Threads a large `batch_search` is split over; 0 uses the
      available cores (at most 8), 1 searches in the calling thread only.
      Tantivy releases the GIL while scoring, so threads do help.
    max_query_terms: Distinct terms kept from each query.
    stopwords: Query terms to ignore unless a query has nothing else (see
      `query.search_terms`); the default is Lucene's English list, as in
      Search-R1's BM25. None or empty keeps every term.
  """

  # Each search thread gets at least this many queries of a batch.
  _MIN_QUERIES_PER_THREAD = 4

  def __init__(self, index_dir: str | os.PathLike, *, title_boost: float = 1.0,
               num_threads: int = 0, max_query_terms: int = DEFAULT_MAX_TERMS,
               stopwords: Iterable[str] | None = ENGLISH_STOPWORDS):
    if title_boost <= 0:
      raise ValueError(f"title_boost must be positive, got {title_boost}")
    self.index_dir = str(index_dir)
    self.manifest = read_manifest(index_dir)
    self._index = tantivy.Index.open(self.index_dir)
    self._schema = self._index.schema
    self._searcher = self._index.searcher()
    num_docs = self._searcher.num_docs
    if num_docs != self.manifest["num_passages"]:
      raise IncompleteIndexError(
          f"{self.index_dir} holds {num_docs} passages but its manifest says "
          f"{self.manifest['num_passages']}; rebuild it with --overwrite")
    self.title_boost = float(title_boost)
    self.max_query_terms = max_query_terms
    self.stopwords = frozenset(term.lower() for term in stopwords or ())
    self._num_threads = num_threads if num_threads > 0 else _default_num_threads()
    self._pool: concurrent.futures.ThreadPoolExecutor | None = None
    self._pool_lock = threading.Lock()
    self._closed = False

  @property
  def num_passages(self) -> int:
    """Number of passages in the index."""
    return self._searcher.num_docs

  def _query(self, terms: list[str]) -> tantivy.Query:
    # Built from exact index terms rather than through the query parser: it
    # cannot fail on any input and is faster than parsing.
    term_query = tantivy.Query.term_query
    schema = self._schema
    should = tantivy.Occur.Should
    if self.title_boost == 1.0:
      clauses = [(should, term_query(schema, field, term)) for term in terms for field in SEARCH_FIELDS]
    else:
      boost = tantivy.Query.boost_query
      clauses = []
      for term in terms:
        clauses.append((should, boost(term_query(schema, "title", term), self.title_boost)))
        clauses.append((should, term_query(schema, "text", term)))
    return tantivy.Query.boolean_query(clauses)

  def _search_many(self, queries: Sequence[str], top_k: int) -> list[list[SearchHit]]:
    searcher = self._searcher
    search = searcher.search
    fetch = searcher.doc
    max_terms = self.max_query_terms
    stopwords = self.stopwords
    results = []
    for text in queries:
      terms = search_terms(text, max_terms, stopwords)
      if not terms:
        results.append([])
        continue
      hits = []
      for score, address in search(self._query(terms), top_k, count=False).hits:
        doc = fetch(address)
        hits.append(SearchHit(doc.get_first("id"), doc.get_first("title"), doc.get_first("text"), score))
      results.append(hits)
    return results

  def _get_pool(self) -> concurrent.futures.ThreadPoolExecutor:
    with self._pool_lock:
      if self._pool is None:
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=self._num_threads - 1, thread_name_prefix="tantivy-search")
      return self._pool

  def batch_search(self, queries: Sequence[str], top_k: int = 5) -> list[list[SearchHit]]:
    """Returns up to `top_k` hits per query, best first; [] for a query with no terms.

    Raises:
      ValueError: `top_k` is not a positive integer.
      TypeError: a query is not a string.
      RuntimeError: the retriever was closed.
    """
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
      raise ValueError(f"top_k must be a positive integer, got {top_k!r}")
    if self._closed:
      raise RuntimeError(f"TantivyRetriever({self.index_dir}) is closed")
    if isinstance(queries, str):
      raise TypeError("batch_search takes a sequence of queries, not one string; use search()")
    n = len(queries)
    parts = min(self._num_threads, n // self._MIN_QUERIES_PER_THREAD)
    if parts <= 1:
      return self._search_many(queries, top_k)
    # Contiguous chunks, the last one searched by the calling thread.
    bounds = [n * i // parts for i in range(parts + 1)]
    pool = self._get_pool()
    futures = [pool.submit(self._search_many, queries[bounds[i]:bounds[i + 1]], top_k)
               for i in range(parts - 1)]
    last = self._search_many(queries[bounds[-2]:], top_k)
    results = []
    for future in futures:
      results.extend(future.result())
    results.extend(last)
    return results

  def close(self) -> None:
    """Stops the search threads. Safe to call twice."""
    self._closed = True
    with self._pool_lock:
      pool, self._pool = self._pool, None
    if pool is not None:
      pool.shutdown(wait=True)

  def __repr__(self) -> str:
    return f"TantivyRetriever({self.index_dir!r}, num_passages={self.num_passages})"


def cached_index_dir(corpus_path: str | os.PathLike, cache_dir: str | os.PathLike | None = None, *,
                     corpus_format: str = "auto", progress: bool = True) -> Path:
  """An index of the corpus at `corpus_path`, built into the cache on first use.

  The cache key is the corpus's absolute path, size and modification time, so a
  regenerated corpus gets a new index.

  Args:
    corpus_path: A corpus file or directory (any format `corpus_readers` reads).
    cache_dir: The cache root (default: $MASKSEARCH_CACHE or ~/.cache/masksearch_jax).
    corpus_format: The corpus format.
    progress: Show a progress bar while building.
  """
  import hashlib

  from masksearch_jax.data import corpus_readers, world_io
  path = Path(corpus_path).absolute()
  status = path.stat()
  key = hashlib.sha256(f"{path}|{status.st_size}|{status.st_mtime_ns}|{SCHEMA_VERSION}".encode()).hexdigest()[:12]
  index_dir = Path(cache_dir or world_io.default_cache_dir()) / "indexes" / f"{path.parent.name}-{path.stem}-{key}"
  try:
    read_manifest(index_dir)
  except (FileNotFoundError, IncompleteIndexError):
    build_index(corpus_readers.read_corpus(str(path), corpus_format), index_dir, overwrite=index_dir.exists(),
                progress=progress)
  return index_dir
