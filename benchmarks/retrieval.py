"""Benchmark: BM25 retrieval on a generated world -- this project, raw tantivy, bm25s, rank_bm25, HTTP.

On one generated world (100,000 passages by default) and in one run, measures
index build rate, single-thread and batched queries per second, and top-5
overlap with this project's search for:

  * this project: `build_index`, `TantivyRetriever.search` in a loop, and
    `TantivyRetriever.batch_search` in batches of 64 (and, as a what-if, an
    index built with a writer thread per core);
  * the raw `tantivy` Python binding with no project code around it, on its
    own index with the query text as is, and on the project's index with the
    project's terms (equal work: only the project's Python layer differs);
  * bm25s (its own tokenizer with its English stop words; top-k by its default,
    `jax.lax.top_k` when JAX is installed, and by numpy);
  * rank_bm25's BM25Okapi on a 10,000-passage subset (and, more briefly, on
    the full corpus);
  * the HTTP server end to end on loopback (`masksearch serve-index` in a
    subprocess, and `make_server` in this process), batches of 64 queries.

Two query sets of 1,000 seeded queries each: fact look-ups
(`"<entity name> <relation label>"`, what a search agent issues; the main set)
and the world's question texts. It also prints the recoverability figure (the
share of sampled facts whose look-up finds a passage stating the fact in the
top 5) and checks the issue's targets. Writes
benchmarks/results/retrieval.{json,md} and prints the markdown.

How to run (3 to 5 minutes on 2 cores):

  make bench-retrieval
  .venv/bin/python benchmarks/retrieval.py [--num_passages 100000] [--repeats 3]

A smaller `--num_passages` gives a quick smoke run; pass `--out_dir` to keep
its results away from the committed ones.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import datetime
import gc
import importlib.metadata
import json
import os
import platform
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import tantivy

from masksearch_jax.data.passage import Passage
from masksearch_jax.data.world import World, WorldConfig, generate_world
from masksearch_jax.data.world_types import RELATIONS
from masksearch_jax.retrieval.client import HttpRetriever
from masksearch_jax.retrieval.query import ENGLISH_STOPWORDS, search_terms
from masksearch_jax.retrieval.server import make_server
from masksearch_jax.retrieval.tantivy_index import TantivyRetriever, build_index

RESULTS = Path(__file__).parent / "results"
TOP_K = 5
FACTS = "fact look-ups"
QUESTIONS = "questions"

# rank_bm25 has no tokenizer: a plain lowercase word split, minus the same
# English stop words this project drops from queries.
_WORD_RE = re.compile(r"\w+")
# Characters Tantivy's query parser gives a meaning to. Only used for a query
# the raw parser rejects (in our runs none did; the count is reported).
_PARSER_SYNTAX_RE = re.compile(r"[+\-^():\"'\[\]{}!~*\\/<>=`]")


# --------------------------------------------------------------------------
# Timing.


@dataclasses.dataclass
class Timing:
  """Repeated wall-clock timings of one piece of work covering `items` items."""

  items: int
  runs: list[float]

  @property
  def best(self) -> float:
    """Items per second of the fastest run."""
    return self.items / min(self.runs)

  @property
  def median(self) -> float:
    """Items per second of the median run."""
    return self.items / statistics.median(self.runs)

  def to_json(self) -> dict:
    return {"items": self.items, "runs_seconds": [round(r, 5) for r in self.runs],
            "best_per_second": round(self.best, 1), "median_per_second": round(self.median, 1)}


def time_runs(work: Callable[[], object], items: int, repeats: int) -> Timing:
  """Runs `work` `repeats` times (after a garbage collection each) and times each run."""
  runs = []
  for _ in range(repeats):
    gc.collect()
    start = time.perf_counter()
    work()
    runs.append(time.perf_counter() - start)
  return Timing(items, runs)


def load_average() -> float | None:
  """The 1-minute load average (other work on this small machine skews timings)."""
  try:
    return round(os.getloadavg()[0], 2)
  except OSError:
    return None


def log(message: str) -> None:
  print(f"[{time.strftime('%H:%M:%S')} load {load_average()}] {message}", flush=True)


def overlap(reference: Sequence[Sequence[str]], other: Sequence[Sequence[str]]) -> float:
  """Mean |top5(reference) & top5(other)| / 5 over the queries."""
  assert len(reference) == len(other)
  total = sum(len(set(a[:TOP_K]) & set(b[:TOP_K])) for a, b in zip(reference, other))
  return total / (TOP_K * len(reference))


# --------------------------------------------------------------------------
# Corpus and queries.


def fact_query(world: World, fact) -> str:
  """What a search agent asks to look a fact up: the subject's name and the relation's words."""
  return f"{world.entities[fact.subject].name} {RELATIONS[fact.relation][0]}"


def make_query_sets(world: World, num_queries: int, seed: int) -> dict[str, list[str]]:
  rng = random.Random(seed)
  facts = rng.sample(world.facts, min(num_queries, len(world.facts)))
  questions = rng.sample(world.questions, min(num_queries, len(world.questions)))
  return {FACTS: [fact_query(world, f) for f in facts], QUESTIONS: [q.question for q in questions]}


def flat_text(passage: Passage) -> str:
  """The one string bm25s and rank_bm25 index per passage."""
  return f"{passage.title} {passage.text}"


# --------------------------------------------------------------------------
# This project.


def bench_project_build(passages: list[Passage], index_dir: Path, repeats: int) -> Timing:
  """`build_index` with its defaults (one writer thread: the same index from build to build)."""
  def work():
    build_index(passages, index_dir, overwrite=True, progress=False)
  return time_runs(work, len(passages), repeats)


def project_ids(retriever: TantivyRetriever, queries: Sequence[str]) -> list[list[str]]:
  return [[hit.id for hit in retriever.search(q, TOP_K)] for q in queries]


def bench_project_search(retriever: TantivyRetriever, queries: Sequence[str], repeats: int,
                         batch_size: int) -> tuple[Timing, Timing]:
  """(single-thread: `search` in a loop, batched: `batch_search` in batches)."""
  search = retriever.search
  batch_search = retriever.batch_search

  def single():
    for q in queries:
      search(q, TOP_K)

  def batched():
    for start in range(0, len(queries), batch_size):
      batch_search(queries[start:start + batch_size], TOP_K)

  single()  # Warm-up (page cache, pool threads).
  batched()
  return time_runs(single, len(queries), repeats), time_runs(batched, len(queries), repeats)


# --------------------------------------------------------------------------
# The raw tantivy binding, no project code.


def raw_build(passages: list[Passage], index_dir: Path) -> None:
  if index_dir.exists():
    shutil.rmtree(index_dir)
  index_dir.mkdir(parents=True)
  builder = tantivy.SchemaBuilder()
  builder.add_text_field("id", stored=True, tokenizer_name="raw")
  builder.add_text_field("title", stored=True)
  builder.add_text_field("text", stored=True)
  index = tantivy.Index(builder.build(), str(index_dir))
  writer = index.writer()
  for p in passages:
    writer.add_document(tantivy.Document(id=p.id, title=p.title, text=p.text))
  writer.commit()
  writer.wait_merging_threads()


def raw_parseable(index: tantivy.Index, queries: Sequence[str]) -> tuple[list[str], int]:
  """The queries, with parser syntax replaced by spaces in those the parser rejects."""
  out, stripped = [], 0
  for q in queries:
    try:
      index.parse_query(q, ["title", "text"])
    except ValueError:
      q = _PARSER_SYNTAX_RE.sub(" ", q)
      stripped += 1
    out.append(q)
  return out, stripped


def raw_search_fn(index: tantivy.Index, searcher: tantivy.Searcher, count: bool) -> Callable[[str], list[str]]:
  parse = index.parse_query
  search = searcher.search
  fetch = searcher.doc
  fields = ["title", "text"]

  def one(q: str) -> list[str]:
    ids = []
    for _, address in search(parse(q, fields), TOP_K, count=count).hits:
      doc = fetch(address)
      ids.append(doc.get_first("id"))
      doc.get_first("title")
      doc.get_first("text")
    return ids
  return one


def bench_single(one: Callable[[str], object], queries: Sequence[str], repeats: int,
                 warm_up: bool = True) -> Timing:
  """Times `one` over each query in turn, in this thread."""
  def work():
    for q in queries:
      one(q)
  if warm_up:
    work()
  return time_runs(work, len(queries), repeats)


# --------------------------------------------------------------------------
# bm25s.


class Bm25s:
  """bm25s as its README uses it: `Tokenizer(stopwords="en")`, `BM25()`, `retrieve`."""

  def __init__(self, texts: list[str]):
    import bm25s
    self.tokenizer = bm25s.tokenization.Tokenizer(stopwords="en")
    tokens = self.tokenizer.tokenize(texts, return_as="tuple", show_progress=False)
    self.model = bm25s.BM25()
    self.model.index(tokens, show_progress=False)

  def search_one(self, q: str, backend: str) -> list[int]:
    ids = self.tokenizer.tokenize([q], update_vocab=False, show_progress=False)
    docs, _ = self.model.retrieve(ids, k=TOP_K, show_progress=False, n_threads=0, backend_selection=backend)
    return docs[0].tolist()

  def search_all(self, queries: Sequence[str], backend: str, n_threads: int) -> list[list[int]]:
    ids = self.tokenizer.tokenize(list(queries), update_vocab=False, show_progress=False)
    docs, _ = self.model.retrieve(ids, k=TOP_K, show_progress=False, n_threads=n_threads,
                                  backend_selection=backend)
    return docs.tolist()


# --------------------------------------------------------------------------
# rank_bm25.


def rank_bm25_tokenize(text: str) -> list[str]:
  return [t for t in _WORD_RE.findall(text.lower()) if t not in ENGLISH_STOPWORDS]


class RankBm25:
  """rank_bm25's BM25Okapi with default parameters; top 5 by `get_scores`."""

  def __init__(self, texts: list[str]):
    from rank_bm25 import BM25Okapi
    self.model = BM25Okapi([rank_bm25_tokenize(t) for t in texts])

  def search_one(self, q: str) -> list[int]:
    scores = self.model.get_scores(rank_bm25_tokenize(q))
    top = np.argpartition(-scores, TOP_K)[:TOP_K]
    return top[np.argsort(-scores[top], kind="stable")].tolist()


# --------------------------------------------------------------------------
# HTTP server.


class ServeIndexProcess:
  """`python -m masksearch_jax serve-index --port 0` in a subprocess."""

  def __init__(self, index_dir: Path):
    self.proc = subprocess.Popen(
        [sys.executable, "-m", "masksearch_jax", "serve-index", "--index", str(index_dir), "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        cwd=Path(__file__).resolve().parent.parent)
    deadline = time.monotonic() + 120
    self.url = None
    lines = []
    while time.monotonic() < deadline:
      line = self.proc.stdout.readline()
      if not line:
        break
      lines.append(line)
      match = re.search(r" at (http://\S+) ", line)
      if match:
        self.url = match.group(1)
        break
    if self.url is None:
      self.stop()
      raise RuntimeError("serve-index did not start:\n" + "".join(lines))

  def stop(self) -> None:
    if self.proc.poll() is None:
      self.proc.send_signal(signal.SIGTERM)
      try:
        self.proc.wait(timeout=30)
      except subprocess.TimeoutExpired:
        self.proc.kill()
        self.proc.wait()
    self.proc.stdout.close()


def bench_http(url: str, queries: Sequence[str], top_k: int, batch_size: int, repeats: int,
               clients: int = 1) -> Timing:
  """End to end through `HttpRetriever`: `clients` threads each send all batches, one at a time."""
  import concurrent.futures
  retrievers = [HttpRetriever(url, batch_size=batch_size, timeout=120, max_retries=0) for _ in range(clients)]
  try:
    def one_client(r: HttpRetriever):
      results = r.batch_search(queries, top_k)
      assert len(results) == len(queries)

    if clients == 1:
      work = lambda: one_client(retrievers[0])  # noqa: E731
    else:
      pool = concurrent.futures.ThreadPoolExecutor(clients)

      def work():
        for f in [pool.submit(one_client, r) for r in retrievers]:
          f.result()
    work()  # Warm-up (connections, server pool threads).
    timing = time_runs(work, len(queries) * clients, repeats)
    if clients > 1:
      pool.shutdown()
    return timing
  finally:
    for r in retrievers:
      r.close()


# --------------------------------------------------------------------------
# Recoverability.


def recoverability(world: World, retriever: TantivyRetriever, num_facts: int, seed: int) -> dict:
  """Share of sampled facts whose look-up query finds a passage stating them in the top 5."""
  rng = random.Random(seed)
  facts = rng.sample(world.facts, min(num_facts, len(world.facts)))
  states = {p.id: set(p.facts) for p in world.passages}
  results = retriever.batch_search([fact_query(world, f) for f in facts], top_k=TOP_K)
  total, found = collections.Counter(), collections.Counter()
  for fact, hits in zip(facts, results):
    total[fact.relation] += 1
    if any(fact.id in states[hit.id] for hit in hits):
      found[fact.relation] += 1
  by_relation = {r: {"facts": total[r], "found": found[r], "fraction": round(found[r] / total[r], 4)}
                 for r in sorted(total, key=lambda r: (found[r] / total[r], r))}
  return {"facts": len(facts), "found": sum(found.values()),
          "fraction": round(sum(found.values()) / len(facts), 4), "by_relation": by_relation}


# --------------------------------------------------------------------------
# Reporting.


def _docstore_blocksize(index_dir: Path) -> int | None:
  with open(index_dir / "meta.json", encoding="utf-8") as f:
    return json.load(f).get("index_settings", {}).get("docstore_blocksize")


def machine_info() -> dict:
  model = platform.processor()
  cpuinfo = Path("/proc/cpuinfo")  # Linux only; elsewhere platform.processor() stays.
  if cpuinfo.is_file():
    names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text(encoding="utf-8").splitlines()
             if line.startswith("model name")]
    model = names[0] if names else model
  try:
    cores = len(os.sched_getaffinity(0))
  except AttributeError:
    cores = os.cpu_count()
  return {"cpu": model, "cores": cores, "machine": platform.machine(), "platform": platform.platform(),
          "python": platform.python_version()}


def versions() -> dict:
  out = {}
  for name in ("tantivy", "bm25s", "rank-bm25", "numpy", "jax", "requests"):
    try:
      out[name] = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
      out[name] = None
  return out


# --------------------------------------------------------------------------


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--num_passages", type=int, default=100_000)
  parser.add_argument("--seed", type=int, default=0, help="World seed; queries use seed+1, the fact sample seed+2.")
  parser.add_argument("--num_queries", type=int, default=1000, help="Queries per query set.")
  parser.add_argument("--repeats", type=int, default=5, help="Timed runs of each fast measurement.")
  parser.add_argument("--slow_repeats", type=int, default=3,
                      help="Timed runs of bm25s, rank_bm25 and index builds.")
  parser.add_argument("--batch_size", type=int, default=64)
  parser.add_argument("--subset", type=int, default=10_000, help="Passages for rank_bm25's subset.")
  parser.add_argument("--rank_bm25_queries", type=int, default=200, help="Queries per set on the subset.")
  parser.add_argument("--rank_bm25_full_queries", type=int, default=100,
                      help="Fact look-ups for rank_bm25 on the full corpus; 0 skips it.")
  parser.add_argument("--recoverability_facts", type=int, default=5000)
  parser.add_argument("--workdir", default=None, help="Where to build indexes (default: a temp dir).")
  parser.add_argument("--out_dir", default=str(RESULTS))
  args = parser.parse_args()

  started = time.perf_counter()
  workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="bench_retrieval_"))
  try:
    report = run(args, workdir)
  finally:
    if not args.workdir:
      shutil.rmtree(workdir, ignore_errors=True)
  report["total_seconds"] = round(time.perf_counter() - started, 1)
  out_dir = Path(args.out_dir)
  out_dir.mkdir(parents=True, exist_ok=True)
  (out_dir / "retrieval.json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
  markdown = render_markdown(report)
  (out_dir / "retrieval.md").write_text(markdown)
  print(markdown)


def run(args: argparse.Namespace, workdir: Path) -> dict:
  repeats, slow = args.repeats, args.slow_repeats
  loads = {"start": load_average()}
  log(f"generating a {args.num_passages:,}-passage world (seed {args.seed})")
  start = time.perf_counter()
  world = generate_world(WorldConfig.for_num_passages(args.num_passages, seed=args.seed))
  passages = list(world.iter_passages())
  n = len(passages)
  log(f"{n:,} passages, {len(world.facts):,} facts in {time.perf_counter() - start:.1f} s")
  query_sets = make_query_sets(world, args.num_queries, args.seed + 1)
  texts = [flat_text(p) for p in passages]
  pid_of = [p.id for p in passages]
  # The world's millions of objects belong to the harness, not to any system
  # measured: keep the garbage collector from rescanning them during timings.
  gc.collect()
  gc.freeze()
  rows: list[dict] = []
  detail: dict = {}

  def row(system, corpus, query_set, build=None, single=None, batched=None, overlap_=None, note=""):
    rows.append({"system": system, "corpus_passages": corpus, "query_set": query_set,
                 "build": build.to_json() if build else None, "single": single.to_json() if single else None,
                 "batched": batched.to_json() if batched else None,
                 "overlap_with_project": None if overlap_ is None else round(overlap_, 4), "note": note})

  # ---- This project.
  log("this project: build_index")
  project_dir = workdir / "project"
  build_index(passages, project_dir, overwrite=True, progress=False)  # Warm-up (page cache, allocator).
  project_build = bench_project_build(passages, project_dir, slow)
  retriever = TantivyRetriever(project_dir)
  detail["project_segments"] = retriever._searcher.num_segments
  project = {}
  project_hits = {}
  for name, queries in query_sets.items():
    log(f"this project: search, {name}")
    project_hits[name] = project_ids(retriever, queries)
    project[name] = bench_project_search(retriever, queries, repeats, args.batch_size)
  batch_note = f"batched: `batch_search`, batches of {args.batch_size} split over {retriever._num_threads} threads"
  for name in query_sets:
    row("this project (`TantivyRetriever`)", n, name, project_build if name == FACTS else None,
        project[name][0], project[name][1], None, batch_note)

  # ---- What if: a writer thread per core (faster to build; ties rank differently from build to build).
  log("this project: build_index(num_threads=0), a writer thread per core")
  threaded_dir = workdir / "project_threaded"
  threaded_build = time_runs(
      lambda: build_index(passages, threaded_dir, overwrite=True, progress=False, num_threads=0), n, slow)
  threaded = TantivyRetriever(threaded_dir)
  detail["threaded_segments"] = threaded._searcher.num_segments
  threaded_single = {name: bench_single(lambda q: threaded.search(q, TOP_K), queries, repeats)
                     for name, queries in query_sets.items()}
  for name in query_sets:
    row("this project, index built with `num_threads=0` (a writer per core; not the default)", n, name,
        threaded_build if name == FACTS else None, threaded_single[name], None, None,
        f"what-if: {threaded._searcher.num_segments} segments; equal scores rank differently from build to build")

  # ---- Raw tantivy binding.
  log("raw tantivy: build")
  raw_dir = workdir / "raw"
  raw_build(passages, raw_dir)  # Warm-up.
  raw_build_t = time_runs(lambda: raw_build(passages, raw_dir), n, slow)
  raw_index = tantivy.Index.open(str(raw_dir))
  raw_searcher = raw_index.searcher()
  detail["raw_segments"] = raw_searcher.num_segments
  detail["docstore_blocksize"] = {"project": _docstore_blocksize(project_dir), "raw": _docstore_blocksize(raw_dir)}
  # The equal-work rows search the project's own index files with the raw
  # binding, so that only the project's Python layer differs.
  same_index = tantivy.Index.open(str(project_dir))
  same_searcher = same_index.searcher()
  raw, raw_same, raw_stripped = {}, {}, {}
  for name, queries in query_sets.items():
    log(f"raw tantivy: search, {name}")
    parseable, raw_stripped[name] = raw_parseable(raw_index, queries)
    one = raw_search_fn(raw_index, raw_searcher, count=True)
    hits = [one(q) for q in parseable]
    raw[name] = (bench_single(one, parseable, repeats), overlap(project_hits[name], hits))
    # Equal work: the project's query terms (stop words dropped; prepared
    # before timing) and no match count, as `TantivyRetriever` searches.
    same_terms = [" ".join(search_terms(q)) for q in queries]
    one_same = raw_search_fn(same_index, same_searcher, count=False)
    hits = [one_same(q) for q in same_terms]
    raw_same[name] = (bench_single(one_same, same_terms, repeats), overlap(project_hits[name], hits))
  for name in query_sets:
    row("raw `tantivy` binding: query text as is, `search(q, 5)`", n, name,
        raw_build_t if name == FACTS else None, raw[name][0], None, raw[name][1],
        "`parse_query` + `search` + `doc` per hit; counts all matches (the binding's default)")
  for name in query_sets:
    row("raw `tantivy` binding, equal work: project's index and terms, `count=False`", n, name, None,
        raw_same[name][0], None, raw_same[name][1],
        "on the project's index files; stop words dropped before timing: only the project's layer differs")
  detail["raw_queries_stripped"] = raw_stripped
  del raw_searcher, raw_index

  # ---- bm25s.
  log("bm25s: index")
  bm25s_build_runs = []
  model = None
  for _ in range(slow):
    model = None
    gc.collect()
    start = time.perf_counter()
    model = Bm25s(texts)
    bm25s_build_runs.append(time.perf_counter() - start)
  bm25s_build = Timing(n, bm25s_build_runs)
  bm25s: dict = {}
  backends = (("auto", "bm25s, default top-k (`auto`, i.e. `jax.lax.top_k` as JAX is installed)"),
              ("numpy", "bm25s, numpy top-k (`backend_selection=\"numpy\"`)"))
  for name, queries in query_sets.items():
    bm25s[name] = {}
    for backend, _ in backends:
      log(f"bm25s: search, {name}, top-k backend {backend}")
      hits = [[pid_of[i] for i in model.search_one(q, backend)] for q in queries]  # Also the warm-up.
      single = bench_single(lambda q, b=backend, m=model: m.search_one(q, b), queries, slow, warm_up=False)
      batched = {}
      for threads in (0, 2):
        work = lambda b=backend, t=threads, m=model: m.search_all(queries, b, t)  # noqa: E731
        work()
        batched[threads] = time_runs(work, len(queries), slow)
      bm25s[name][backend] = {"single": single, "batched": batched, "overlap": overlap(project_hits[name], hits)}
  for backend, label in backends:
    for name in query_sets:
      r = bm25s[name][backend]
      best_threads = max(r["batched"], key=lambda t: r["batched"][t].best)
      row(label, n, name, bm25s_build if name == FACTS and backend == "auto" else None,
          r["single"], r["batched"][best_threads], r["overlap"],
          f"single: one `retrieve` per query, `n_threads=0`; batched: all {len(query_sets[name])} at once, "
          f"`n_threads={best_threads}` (the faster of 0 and 2); query tokenizing timed")
  detail["bm25s"] = {name: {b: {"single": v["single"].to_json(), "overlap": round(v["overlap"], 4),
                                "batched": {str(t): x.to_json() for t, x in v["batched"].items()}}
                            for b, v in per.items()} for name, per in bm25s.items()}
  del model
  gc.collect()

  # ---- rank_bm25 on a subset, against this project on the same subset and queries.
  subset_n = min(args.subset, n)
  subset_idx = sorted(random.Random(args.seed + 3).sample(range(n), subset_n))
  subset_passages = [passages[i] for i in subset_idx]
  subset_texts = [texts[i] for i in subset_idx]
  log(f"rank_bm25: build on a {subset_n:,}-passage subset")
  rb_build_runs = []
  rb = None
  for _ in range(slow):
    rb = None
    gc.collect()
    start = time.perf_counter()
    rb = RankBm25(subset_texts)
    rb_build_runs.append(time.perf_counter() - start)
  rb_build = Timing(subset_n, rb_build_runs)
  subset_dir = workdir / "project_subset"
  subset_build = bench_project_build(subset_passages, subset_dir, slow)
  subset_retriever = TantivyRetriever(subset_dir)
  subset_single = {}
  rb_subset = {}
  for name, queries in query_sets.items():
    qs = queries[:args.rank_bm25_queries]
    log(f"rank_bm25: search on the subset, {name} ({len(qs)} queries)")
    hits = [[subset_passages[i].id for i in rb.search_one(q)] for q in qs]  # Also the warm-up.
    rb_subset[name] = bench_single(rb.search_one, qs, slow, warm_up=False)
    sub_project = bench_project_search(subset_retriever, qs, max(repeats, 10), args.batch_size)
    subset_single[name] = sub_project[0]
    ov = overlap(project_ids(subset_retriever, qs), hits)
    row(f"rank_bm25 `BM25Okapi`, **{subset_n:,}-passage subset**", subset_n, f"{name} (first {len(qs)})",
        rb_build if name == FACTS else None, rb_subset[name], None, ov,
        "no batch API; overlap against this project's index of the same subset")
    row(f"this project on the same **{subset_n:,}-passage subset**", subset_n, f"{name} (first {len(qs)})",
        subset_build if name == FACTS else None, sub_project[0], sub_project[1], None,
        "reference for the subset ratio")
  subset_retriever.close()
  del rb
  gc.collect()

  # ---- rank_bm25 on the full corpus, fewer queries.
  rb_full = project_same_queries = raw_same_queries = threaded_same_queries = None
  if args.rank_bm25_full_queries > 0:
    log(f"rank_bm25: build on the full {n:,} passages")
    gc.collect()
    start = time.perf_counter()
    rb = RankBm25(texts)
    rb_full_build = Timing(n, [time.perf_counter() - start])
    qs = query_sets[FACTS][:args.rank_bm25_full_queries]
    log(f"rank_bm25: search on the full corpus ({len(qs)} fact look-ups)")
    rb.search_one(qs[0])  # Warm-up.
    hits = []
    gc.collect()
    start = time.perf_counter()
    for q in qs:
      hits.append([pid_of[i] for i in rb.search_one(q)])
    rb_full = Timing(len(qs), [time.perf_counter() - start])
    ov = overlap(project_hits[FACTS][:len(qs)], hits)
    project_same_queries = bench_project_search(retriever, qs, max(repeats, 10), args.batch_size)
    raw_same_queries = bench_single(one_same, [" ".join(search_terms(q)) for q in qs], max(repeats, 10))
    threaded_same_queries = bench_single(lambda q: threaded.search(q, TOP_K), qs, max(repeats, 10))
    detail["rank_bm25_full_same_queries"] = {
        "rank_bm25": rb_full.to_json(), "project": project_same_queries[0].to_json(),
        "raw_equal_work": raw_same_queries.to_json(), "project_threaded": threaded_same_queries.to_json()}
    row("rank_bm25 `BM25Okapi`, full corpus", n, f"{FACTS} (first {len(qs)})", rb_full_build, rb_full, None,
        ov, "one timed run: each query scores every passage in Python")
    row("this project (`TantivyRetriever`)", n, f"{FACTS} (first {len(qs)})", None, project_same_queries[0],
        project_same_queries[1], None, "reference for the full-corpus rank_bm25 ratio")
    del rb
    gc.collect()
  threaded.close()
  del same_searcher, same_index

  # ---- HTTP server end to end.
  http_rows = {}
  log("HTTP: serve-index subprocess")
  server_proc = ServeIndexProcess(project_dir)
  try:
    for name, queries in query_sets.items():
      for top_k in (5, 3):
        http_rows[("subprocess", name, top_k, 1)] = bench_http(server_proc.url, queries, top_k,
                                                               args.batch_size, repeats)
      http_rows[("subprocess", name, 5, 2)] = bench_http(server_proc.url, queries, 5, args.batch_size,
                                                         repeats, clients=2)
  finally:
    server_proc.stop()
  log("HTTP: make_server in this process")
  with make_server(retriever) as server:
    server.start()
    for name, queries in query_sets.items():
      for top_k in (5, 3):
        http_rows[("in process", name, top_k, 1)] = bench_http(server.url, queries, top_k,
                                                               args.batch_size, repeats)
  for (where, name, top_k, clients), timing in http_rows.items():
    who = "`masksearch serve-index` subprocess" if where == "subprocess" else "`make_server` in the client's process"
    client_note = "one client sending its batches one after another" if clients == 1 else \
        f"{clients} client threads at once, each sending every batch"
    row(f"HTTP server ({who}), topk {top_k}" + ("" if clients == 1 else f", {clients} clients"), n, name,
        None, None, timing, None, f"`HttpRetriever`, {args.batch_size} queries per request; {client_note}")

  # ---- Recoverability.
  log(f"recoverability: {args.recoverability_facts:,} facts")
  recover = recoverability(world, retriever, args.recoverability_facts, args.seed + 2)
  log(f"recoverability: {recover['fraction']:.4f} of {recover['facts']:,} facts found in the top 5")
  retriever.close()
  loads["end"] = load_average()

  # ---- Targets.
  def ratio(a: Timing, b: Timing) -> float:
    return a.best / b.best

  targets = [
      {"id": "overhead", "target": "in-process search ≥ 70% of the raw binding's q/s (single thread, fact look-ups; raw doing "
                 "equal work)", "measured": ratio(project[FACTS][0], raw_same[FACTS][0]), "threshold": 0.70,
       "unit": "ratio"},
      {"id": "bm25s", "target": "in-process search ≥ 20x bm25s (single thread, fact look-ups; bm25s with its default top-k)",
       "measured": ratio(project[FACTS][0], bm25s[FACTS]["auto"]["single"]), "threshold": 20.0, "unit": "x"},
  ]
  if rb_full is not None:
    targets.append(
        {"id": "rank_bm25", "target": f"in-process search ≥ 1,000x rank_bm25 (single thread, full {n:,} passages, the same "
                   f"{rb_full.items} fact look-ups)", "measured": ratio(project_same_queries[0], rb_full),
         "threshold": 1000.0, "unit": "x"})
  targets += [
      {"id": "build", "target": "index build ≥ 50,000 passages/s (`build_index`)", "measured": project_build.best,
       "threshold": 50_000.0, "unit": "passages/s"},
      {"id": "server", "target": f"server ≥ 3,000 q/s in batches of {args.batch_size} (`serve-index` subprocess, topk 5, "
                 "fact look-ups)", "measured": http_rows[("subprocess", FACTS, 5, 1)].best, "threshold": 3000.0,
       "unit": "q/s"},
      {"id": "recoverability", "target": "recoverability ≥ 0.95 (a passage stating the fact in the top 5)", "measured": recover["fraction"],
       "threshold": 0.95, "unit": "fraction"},
  ]
  for t in targets:
    t["pass"] = bool(t["measured"] >= t["threshold"])
    t["measured"] = round(t["measured"], 4)
  informational = [
      ("in-process / raw equal work, questions", ratio(project[QUESTIONS][0], raw_same[QUESTIONS][0])),
      ("in-process / raw as is, fact look-ups", ratio(project[FACTS][0], raw[FACTS][0])),
      ("in-process / raw as is, questions", ratio(project[QUESTIONS][0], raw[QUESTIONS][0])),
      ("in-process / bm25s default top-k, questions", ratio(project[QUESTIONS][0], bm25s[QUESTIONS]["auto"]["single"])),
      ("in-process / bm25s numpy top-k, fact look-ups", ratio(project[FACTS][0], bm25s[FACTS]["numpy"]["single"])),
      ("in-process / bm25s numpy top-k, questions", ratio(project[QUESTIONS][0], bm25s[QUESTIONS]["numpy"]["single"])),
      (f"in-process / rank_bm25 on the {subset_n:,}-passage subset, fact look-ups",
       ratio(subset_single[FACTS], rb_subset[FACTS])),
      (f"in-process / rank_bm25 on the {subset_n:,}-passage subset, questions",
       ratio(subset_single[QUESTIONS], rb_subset[QUESTIONS])),
      ("in-process with a writer-per-core index / default index, fact look-ups",
       ratio(threaded_single[FACTS], project[FACTS][0])),
      ("in-process with a writer-per-core index / default index, questions",
       ratio(threaded_single[QUESTIONS], project[QUESTIONS][0])),
      ("in-process batched / single thread, fact look-ups", ratio(project[FACTS][1], project[FACTS][0])),
      ("in-process batched / single thread, questions", ratio(project[QUESTIONS][1], project[QUESTIONS][0])),
  ]
  if rb_full is not None:
    informational += [
        (f"raw binding, equal work / rank_bm25, full corpus, the same {rb_full.items} fact look-ups",
         ratio(raw_same_queries, rb_full)),
        (f"in-process with a writer-per-core index / rank_bm25, full corpus, the same {rb_full.items} fact "
         "look-ups", ratio(threaded_same_queries, rb_full))]
  needed = 20.0 * bm25s[FACTS]["auto"]["single"].best
  detail["bm25s_20x_needs_qps"] = round(needed)
  return {
      "benchmark": "retrieval",
      "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
      "machine": machine_info(), "load_average_1min": loads, "versions": versions(),
      "corpus": {"world_seed": args.seed, "passages": n, "facts": len(world.facts),
                 "questions": len(world.questions), "indexed": "title and text"},
      "settings": {"top_k": TOP_K, "num_queries": args.num_queries, "repeats": repeats, "slow_repeats": slow,
                   "batch_size": args.batch_size, "subset": subset_n, "rank_bm25_queries": args.rank_bm25_queries,
                   "rank_bm25_full_queries": args.rank_bm25_full_queries,
                   "query_seed": args.seed + 1, "fact_sample_seed": args.seed + 2, "subset_seed": args.seed + 3},
      "query_examples": {name: qs[:3] for name, qs in query_sets.items()},
      "rows": rows, "targets": targets,
      "informational_ratios": [{"name": k, "ratio": round(v, 3)} for k, v in informational],
      "recoverability": recover, "detail": detail,
  }


def render_markdown(report: dict) -> str:
  m, v, c, s = report["machine"], report["versions"], report["corpus"], report["settings"]
  load = report["load_average_1min"]
  lines = [
      "# Retrieval benchmark", "",
      f"{report['date']} · {m['cpu']}, {m['cores']} cores · Python {m['python']} · tantivy {v['tantivy']}, "
      f"bm25s {v['bm25s']}, rank_bm25 {v['rank-bm25']}, numpy {v['numpy']}, jax {v['jax']} · "
      f"1-minute load average {load['start']} at the start, {load['end']} at the end (this benchmark itself "
      f"keeps one or two cores busy) · "
      f"{report['total_seconds']:.0f} s in all", "",
      f"Corpus: a generated world of {c['passages']:,} passages (seed {c['world_seed']}); title and text indexed. "
      f"Top {s['top_k']}. Query sets: {s['num_queries']:,} seeded **fact look-ups** "
      f"(`\"<entity name> <relation label>\"`, e.g. `{report['query_examples'][FACTS][0]}`), the queries a "
      f"search agent issues, and {s['num_queries']:,} **questions** (e.g. "
      f"`{report['query_examples'][QUESTIONS][0]}`).", "",
      f"Rates are the best of {s['repeats']} timed runs (at least 10 on the small query subsets; "
      f"{s['slow_repeats']} for bm25s, rank_bm25 and builds; one for rank_bm25 on the full corpus), after a "
      "warm-up run, with the median in brackets. The machine has 2 cores and is shared; run-to-run noise is "
      "about ±10–20%. *Single thread*: one query at a time in the calling thread, for every system. *Build*: "
      "passages/s from an in-memory list to a committed index (or, for bm25s and rank_bm25, from strings "
      "to a ready model, tokenizing included).", "",
      "| system | corpus | query set | build (passages/s) | single-thread (q/s) | batched (q/s) | "
      "top-5 overlap with this project | notes |",
      "|---|---:|---|---:|---:|---:|---:|---|",
  ]
  for r in report["rows"]:
    def rate(key):
      t = r[key]
      if t is None:
        return "—"
      fmt = ",.0f" if t["best_per_second"] >= 100 else ",.1f"
      return f"{t['best_per_second']:{fmt}} ({t['median_per_second']:{fmt}})"
    ov = "—" if r["overlap_with_project"] is None else f"{r['overlap_with_project']:.3f}"
    lines.append(f"| {r['system']} | {r['corpus_passages']:,} | {r['query_set']} | {rate('build')} | "
                 f"{rate('single')} | {rate('batched')} | {ov} | {r['note']} |")
  lines += ["", "## Targets", "", "| target | measured | pass |", "|---|---:|---|"]
  for t in report["targets"]:
    value = t["measured"]
    shown = {"ratio": f"{value:.2f}", "x": f"{value:,.1f}x", "passages/s": f"{value:,.0f}",
             "q/s": f"{value:,.0f}", "fraction": f"{value:.4f}"}[t["unit"]]
    lines.append(f"| {t['target']} | {shown} | {'PASS' if t['pass'] else '**FAIL**'} |")
  lines += ["", "Other ratios (best single-thread q/s unless named): " + "; ".join(
      f"{x['name']}: {x['ratio']:,.2f}" for x in report["informational_ratios"]) + ".", ""]
  missed = [t for t in report["targets"] if not t["pass"]]
  if missed:
    lines += ["## Missed targets", ""] + [f"- {why_missed(report, t)}" for t in missed] + [""]
  rec = report["recoverability"]
  worst = list(rec["by_relation"].items())[:5]
  lines += ["## Recoverability", "",
            f"{rec['found']:,} of {rec['facts']:,} sampled facts ({rec['fraction']:.2%}) are found by the query "
            "`\"<subject name> <relation label>\"`: a passage whose facts include the fact is in this project's "
            "top 5. Lowest relations: " + ", ".join(f"{r} {x['fraction']:.2%} ({x['found']}/{x['facts']})"
                                                  for r, x in worst) + " (all relations in the JSON).", ""]
  lines += ["## Notes", ""] + [f"- {note}" for note in notes(report)] + [""]
  return "\n".join(lines)


def why_missed(report: dict, target: dict) -> str:
  """What the measurements say about a missed target."""
  d = report["detail"]
  rows = {(r["system"], r["query_set"]): r for r in report["rows"]}
  raw_equal = rows[("raw `tantivy` binding, equal work: project's index and terms, `count=False`", FACTS)]
  raw_equal_qps = raw_equal["single"]["best_per_second"]
  if target["id"] == "bm25s":
    bm = d["bm25s"][FACTS]
    return (f"20x bm25s: bm25s answers {bm['auto']['single']['best_per_second']:,.0f} fact look-ups/s on one "
            f"thread with its default top-k, so 20x would be {d['bm25s_20x_needs_qps']:,} q/s, "
            f"{d['bm25s_20x_needs_qps'] / raw_equal_qps:.1f}x what the raw binding itself does on the same index "
            f"and terms ({raw_equal_qps:,.0f} q/s)"
            + (". No layer over this binding can reach it; the cause is the peer, faster than the issue assumed"
               if d['bm25s_20x_needs_qps'] > raw_equal_qps else "") + ". Against bm25s's numpy top-k path "
            f"({bm['numpy']['single']['best_per_second']:,.0f} q/s) the ratio is "
            f"{[x for x in report['informational_ratios'] if x['name'] == 'in-process / bm25s numpy top-k, fact look-ups'][0]['ratio']:.1f}x.")
  if target["id"] == "rank_bm25":
    same = d["rank_bm25_full_same_queries"]
    rb = same["rank_bm25"]["best_per_second"]
    project_qps = same["project"]["best_per_second"]
    raw_qps = same["raw_equal_work"]["best_per_second"]
    threaded_qps = same["project_threaded"]["best_per_second"]
    if raw_qps / rb >= 1000:
      binding = (f"the raw binding with no project code, on the same index and terms, does {raw_qps:,.0f} "
                 f"({raw_qps / rb:,.0f}x), so in this run the project's layer makes the difference, though it "
                 f"keeps {project_qps / raw_qps:.0%} of the binding's speed where the overhead budget asks for 70%")
    else:
      binding = (f"even the raw binding with no project code, on the same index and terms, does only "
                 f"{raw_qps:,.0f} ({raw_qps / rb:,.0f}x; the project keeps {project_qps / raw_qps:.0%} of it), so "
                 "the target is beyond what this binding does on this corpus")
    return (f"1,000x rank_bm25: on the same {same['rank_bm25']['items']} fact look-ups rank_bm25 does {rb:,.1f} "
            f"q/s on the full corpus, so 1,000x is {1000 * rb:,.0f} q/s. This project does {project_qps:,.0f} "
            f"({project_qps / rb:,.0f}x); {binding}. An index built with a writer per core "
            f"(`build_index(num_threads=0)`, not the default) searches at {threaded_qps:,.0f} q/s "
            f"({threaded_qps / rb:,.0f}x). "
            "rank_bm25's own figure is one timed run and moves by about ±10% with the machine's load.")
  return f"{target['target']}: measured {target['measured']}, see the table."


def notes(report: dict) -> list[str]:
  d, s = report["detail"], report["settings"]
  bm = d["bm25s"][FACTS]
  numpy_factor = bm["auto"]["single"]["best_per_second"] / bm["numpy"]["single"]["best_per_second"]
  blocks = d["docstore_blocksize"]
  return [
      "This project searches each query's distinct terms minus Lucene's English stop words, as a disjunction "
      "of term queries over title and text built without the parser, and asks Tantivy not to count all "
      "matches (`count=False`, which lets it skip documents that cannot reach the top 5). The raw binding used "
      "as is parses the whole query text (stop words and all) and counts matches, so it does more work. The "
      "*equal work* raw rows search the project's own index files with the project's terms (prepared before "
      "timing) and `count=False`, so only the project's Python layer differs; the 70% overhead target is "
      "measured against them.",
      f"Index layout: `build_index` writes doc store blocks of {blocks['project']:,} bytes (the raw binding "
      f"keeps Tantivy's default, {blocks['raw']:,}); each fetched hit decompresses its whole block, so smaller "
      f"blocks make the 5 fetches per query cheaper. Segments: the project's index has "
      f"{d['project_segments']}, the raw one {d['raw_segments']} (one writer thread per core, each writing its "
      "own segment).",
      "Raw queries: the question texts use `?`, `,` and `-`, which Tantivy's parser accepts, so no query had "
      f"to be stripped of parser syntax (stripped: {d['raw_queries_stripped']}). The raw parser turns a "
      "hyphenated word into a phrase query.",
      "bm25s and rank_bm25 index `\"<title> <text>\"` as one field; Tantivy scores title and text as two fields "
      "(BM25 k1=1.2, b=0.75 each) and sums them; bm25s uses k1=1.5, b=0.75 (its Lucene variant), rank_bm25's "
      "BM25Okapi k1=1.5, b=0.75. Ties break differently too. So top-5 overlap measures agreement, not accuracy.",
      "bm25s: `bm25s.tokenization.Tokenizer(stopwords=\"en\")` (its regex `\\b\\w\\w+\\b`, lowercased, its "
      "English stop words), `BM25()` defaults, scores by its numpy backend. Its top-k step is `jax.lax.top_k` "
      "by default whenever JAX is installed (this project depends on JAX) and `np.argpartition` otherwise; "
      f"both are shown. The numpy one is {numpy_factor:.1f}x slower on fact look-ups here, because "
      "`np.argpartition` is slow on score vectors that are mostly zeros (a query's terms touch few passages); "
      "the issue's first look (about 350 q/s) matches that path. The 20x target is judged against bm25s as "
      "it runs by default here. Numba is not installed, so bm25s's numba backend was not measured.",
      "rank_bm25: tokens are `\\w+` lowercased minus the same English stop words this project drops; top 5 by "
      "`np.argpartition` over `get_scores`. It scores every passage in Python for each query term, so its "
      f"speed falls in proportion to the corpus: it runs on a {s['subset']:,}-passage subset with "
      f"{s['rank_bm25_queries']} queries per set, and once on the full corpus with the first "
      f"{s['rank_bm25_full_queries']} fact look-ups. The 1,000x verdict uses the full corpus, with this project "
      "timed on the same queries.",
      f"HTTP: `HttpRetriever` (requests, keep-alive, JSON) against the standard-library threaded server; each "
      f"request carries {s['batch_size']} queries and the server splits it over 2 search threads. The "
      "subprocess server does not share the client's GIL; the in-process one does.",
      "The benchmark freezes the generated world's objects out of the garbage collector (`gc.freeze()`) before "
      "timing, so that no system pays for rescanning the harness's millions of objects.",
  ]


if __name__ == "__main__":
  main()
