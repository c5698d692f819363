"""The main job on the embedded world: what `make quickstart` runs.

Today it generates the world, builds its Tantivy index and runs a handful of
searches, printing each query, its top hits and whether a hit states the fact
the query asks for. Later stages (RAMP data, SFT, DAPO, evaluation) extend
this same job. Everything already built is reused unless `rebuild` is set.
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

from masksearch_jax.data import world_io
from masksearch_jax.data.world import WorldConfig
from masksearch_jax.data.world_types import RELATIONS


def run(*, world: WorldConfig = WorldConfig(seed=0, size=4000), workdir: str = "artifacts/quickstart",
        rebuild: bool = False, num_queries: int = 6, top_k: int = 3, seed: int = 0) -> dict:
  """Builds the world and index under `workdir`, searches, prints, and returns a summary.

  Args:
    world: Which world to generate (seed and size; see `WorldConfig`).
    workdir: Directory for every artifact of the job.
    rebuild: Regenerate the world and rebuild the index even if they exist.
    num_queries: How many fact-lookup searches to run and print.
    top_k: Hits shown per search.
    seed: Chooses which facts are looked up.

  Returns:
    A summary dict (also written to `workdir/summary.json`).
  """
  from masksearch_jax.retrieval import tantivy_index

  start = time.perf_counter()
  root = Path(workdir)
  world_dir, index_dir = root / "world", root / "index"
  reuse_world = not rebuild and world_io.is_complete(world_dir) and _same_config(world_dir, world)
  if reuse_world:
    print(f"[1/3] world: reusing {world_dir}")
  else:
    print(f"[1/3] world: generating seed={world.seed} size={world.size}")
    world_io.generate_and_write(world, world_dir, overwrite=True)
  loaded = world_io.load_world(world_dir)

  if reuse_world and _index_matches(index_dir, len(loaded.passages)):
    print(f"[2/3] index: reusing {index_dir}")
  else:
    print("[2/3] index: building")
    tantivy_index.build_index(loaded.iter_passages(), index_dir, overwrite=True, total=len(loaded.passages))

  print(f"[3/3] search: {num_queries} fact look-ups, top {top_k}")
  rng = random.Random(seed)
  facts = rng.sample(loaded.facts, min(num_queries, len(loaded.facts)))
  queries = [f"{loaded.entities[f.subject].name} {RELATIONS[f.relation][0]}" for f in facts]
  states = {p.id: set(p.facts) for p in loaded.passages}
  found = 0
  with tantivy_index.TantivyRetriever(index_dir) as retriever:
    for fact, query, hits in zip(facts, queries, retriever.batch_search(queries, top_k)):
      hit = next((h for h in hits if fact.id in states[h.id]), None)
      found += hit is not None
      print(f"\n  query: {query!r}  ->  {'found in ' + hit.id if hit else 'not in top ' + str(top_k)}")
      for rank, h in enumerate(hits, 1):
        mark = "*" if fact.id in states[h.id] else " "
        print(f"   {mark}{rank}. [{h.score:5.2f}] {h.title}: {h.text[:110]}...")
  summary = {
      "world_dir": str(world_dir), "index_dir": str(index_dir),
      "passages": len(loaded.passages), "entities": len(loaded.entities), "facts": len(loaded.facts),
      "questions": len(loaded.questions), "searches": len(queries), "facts_found_in_top_k": found,
      "top_k": top_k, "seconds": round(time.perf_counter() - start, 1),
  }
  (root / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
  print(f"\nquickstart done in {summary['seconds']}s: {summary['passages']:,} passages, "
        f"{summary['questions']:,} questions; {found}/{len(queries)} looked-up facts in the top {top_k}.")
  print(f"  world: {world_dir}\n  index: {index_dir}\n  summary: {root / 'summary.json'}")
  return summary


def _same_config(world_dir: Path, config: WorldConfig) -> bool:
  return world_io.load_config(world_dir) == config


def _index_matches(index_dir: Path, num_passages: int) -> bool:
  """True when `index_dir` is a complete index of `num_passages` passages (else it is rebuilt)."""
  from masksearch_jax.retrieval import tantivy_index
  try:
    manifest = tantivy_index.read_manifest(index_dir)
  except (FileNotFoundError, tantivy_index.IncompleteIndexError) as e:
    print(f"      ({e})")
    return False
  return manifest.get("num_passages") == num_passages
