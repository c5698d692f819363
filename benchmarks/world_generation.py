"""Benchmark: how fast the embedded world is generated, pinned to one CPU core.

Target (issue 2): 100,000 passages in under a minute on one core; a million
passages possible. Writes benchmarks/results/world_generation.{json,md}.

  .venv/bin/python benchmarks/world_generation.py [--sizes 100000,1000000]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import time
from pathlib import Path

from masksearch_jax.data.world import WorldConfig, generate_world

RESULTS = Path(__file__).parent / "results"


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--sizes", default="100000", help="Comma-separated passage counts to generate.")
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args()
  if hasattr(os, "sched_setaffinity"):
    os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
  rows = []
  for target in (int(s) for s in args.sizes.split(",")):
    config = WorldConfig.for_num_passages(target, seed=args.seed)
    start = time.perf_counter()
    world = generate_world(config)
    seconds = time.perf_counter() - start
    rows.append({"target_passages": target, "people": config.size, "passages": len(world.passages),
                 "entities": len(world.entities), "facts": len(world.facts), "questions": len(world.questions),
                 "seconds": round(seconds, 2), "passages_per_second": round(len(world.passages) / seconds),
                 "max_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)})
    print(rows[-1], flush=True)
    del world
  report = {"benchmark": "world_generation", "cores": 1, "machine": platform.machine(),
            "python": platform.python_version(), "target": "100,000 passages in under 60 s on one core",
            "rows": rows}
  RESULTS.mkdir(exist_ok=True)
  (RESULTS / "world_generation.json").write_text(json.dumps(report, indent=2) + "\n")
  lines = ["# World generation (one core)", "",
           "| passages | people | entities | facts | questions | seconds | passages/s | max RSS (MB) |",
           "|---:|---:|---:|---:|---:|---:|---:|---:|"]
  for r in rows:
    lines.append(f"| {r['passages']:,} | {r['people']:,} | {r['entities']:,} | {r['facts']:,} | "
                 f"{r['questions']:,} | {r['seconds']} | {r['passages_per_second']:,} | {r['max_rss_mb']:,} |")
  (RESULTS / "world_generation.md").write_text("\n".join(lines) + "\n")
  print("\n".join(lines))


if __name__ == "__main__":
  main()
