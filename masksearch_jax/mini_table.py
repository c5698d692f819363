"""MaskSearch's main table in miniature, on the embedded world (`make mini-table`).

Every row trains (or not) one way and is evaluated on the same held-out questions: questions
about entities never seen in training, split into the question types downstream training saw
(in-domain) and one type it never saw (out-of-domain). Every row gets the same downstream data
and the same downstream budget; rows that pretrain with RAMP get the same RAMP budget.

  prompt-only             the untrained policy, searching as an agent (no agent training)
  plain RAG               the downstream-SFT policy given the top passages of one search
  downstream SFT          SFT on the downstream question trajectories only
  RAMP SFT -> downstream  RAMP SFT with the 1 -> 4 mask curriculum, then downstream SFT
  RAMP mixed -> downstream  RAMP SFT mixing 1..4 masks (same steps), then downstream SFT
  RAMP SFT + DAPO -> downstream  the curriculum SFT checkpoint, DAPO on RAMP, then downstream SFT

Each (row, seed) is one `quickstart.run` in `workdir/SEED/ROW/`, sharing world, index,
vocabulary and trajectories in `workdir/data/`; a row that continues another's checkpoint
(DAPO from the curriculum SFT) reuses it instead of training it again. Finished runs are
reused and an interrupted one resumes, so rerunning the command finishes the table. The
table (mean and spread over seeds), its JSON and chart go to `workdir/report/`.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Sequence

from masksearch_jax import quickstart
from masksearch_jax.errors import ConfigError

ROWS = ("prompt-only", "plain RAG", "downstream SFT", "RAMP SFT -> downstream", "RAMP mixed -> downstream",
        "RAMP SFT + DAPO -> downstream")
_TRAINING = ("sft", "dapo", "qa_sft")
# Rows run in this order: a row that reuses another's checkpoint comes after it.
_ORDER = ("downstream SFT", "plain RAG", "prompt-only", "RAMP SFT -> downstream", "RAMP SFT + DAPO -> downstream",
          "RAMP mixed -> downstream")


def run_table(*, workdir: str, seeds: Sequence[int] = (0, 1, 2), rows: Sequence[str] = ROWS,
              in_domain_types: Sequence[str] = ("compositional", "inference", "comparison"),
              held_out_types: Sequence[str] = ("bridge_comparison",), data_seed: int = 0,
              progress: bool = True) -> dict:
  """Trains and evaluates every row for every seed, then writes the joined report.

  Args:
    workdir: Where the runs, the shared data and the report go (TABLE_DIR).
    seeds: Training seeds; every row runs once per seed (the data is the same for all).
    rows: Which rows of `ROWS` to run.
    in_domain_types: Question types of the downstream training data (and the in-domain column).
    held_out_types: Question types never trained on (the out-of-domain column).
    data_seed: Seed of the shared data (RAMP examples, teacher, vocabulary).
    progress: Progress bars and summaries.

  Everything else (world, model, budgets, rollouts) is `quickstart.run`'s Gin bindings, the same
  for every row.

  Returns:
    {"runs": [...], "report": {md, json, png paths}, "seconds": ...}.
  """
  unknown = [r for r in rows if r not in ROWS]
  if unknown:
    raise ConfigError(f"mini_table.run_table.rows: unknown row {unknown[0]!r}; rows are {', '.join(ROWS)}")
  if not seeds:
    raise ConfigError("mini_table.run_table.seeds is empty")
  needs = {"plain RAG": "downstream SFT", "RAMP SFT + DAPO -> downstream": "RAMP SFT -> downstream"}
  missing = [(row, needs[row]) for row in rows if row in needs and needs[row] not in rows]
  if missing:
    raise ConfigError(f"mini_table.run_table.rows: row {missing[0][0]!r} needs row {missing[0][1]!r}")
  overlap = set(in_domain_types) & set(held_out_types)
  if overlap:
    raise ConfigError(f"question type {sorted(overlap)[0]!r} is both in-domain and held out")
  root = Path(workdir).absolute()
  started = time.perf_counter()
  common = dict(data_dir=str(root / "data"), qa_train_types=list(in_domain_types),
                eval_sets=[("in-domain", list(in_domain_types)), ("held-out type", list(held_out_types))],
                data_seed=data_seed, progress=progress)
  plan = [(seed, row) for seed in seeds for row in _ORDER if row in rows]
  configured_run = quickstart.configured(quickstart.run)
  run_dirs = []
  for n, (seed, row) in enumerate(plan, 1):
    workdir_of = root / f"seed-{seed}" / _slug(row)
    print(f"\n=== mini table {n}/{len(plan)}: {row}, seed {seed} -> {workdir_of}", file=sys.stderr)
    summary = configured_run(workdir=str(workdir_of), seed=seed, **common, **_row_settings(row, root, seed))
    run_dirs += sorted({r["dir"] for r in summary["stages"]["eval"]["runs"].values()})
  from masksearch_jax.eval import report
  paths = report.write_report(run_dirs, root / "report")
  content = report.report(report.load_results(run_dirs))
  if progress:
    print(report.markdown_report(content))
    print(f"mini table ({len(plan)} runs) in {time.perf_counter() - started:.0f}s -> {paths['md']}")
  return {"runs": run_dirs, "report": {k: str(v) for k, v in paths.items()},
          "seconds": round(time.perf_counter() - started, 1)}


def _slug(row: str) -> str:
  return "".join(c if c.isalnum() else "-" for c in row.lower()).strip("-").replace("---", "-").replace("--", "-")


def _row_settings(row: str, root: Path, seed: int) -> dict:
  """The `quickstart.run` settings that make `row`."""
  if row == "prompt-only":
    return {"skip": ("report",) + _TRAINING, "eval_methods": ("masksearch",), "method_names": {"masksearch": row}}
  if row == "plain RAG":
    # The downstream-SFT policy (the next row trains it in its own directory; this row reuses it).
    policy = root / f"seed-{seed}" / _slug("downstream SFT") / "qa_sft" / "checkpoints"
    return {"skip": ("report",) + _TRAINING, "initial_checkpoint": str(policy), "eval_methods": ("rag",),
            "method_names": {"rag": row}}
  if row == "downstream SFT":
    return {"skip": ("report", "sft", "dapo"), "eval_methods": ("masksearch",), "method_names": {"masksearch": row}}
  if row == "RAMP SFT -> downstream":
    return {"skip": ("report", "dapo"), "eval_methods": ("masksearch",), "method_names": {"masksearch": row}}
  if row == "RAMP mixed -> downstream":
    return {"skip": ("report", "dapo"), "curriculum": False, "eval_methods": ("masksearch",),
            "method_names": {"masksearch": row}}
  sft = root / f"seed-{seed}" / _slug("RAMP SFT -> downstream") / "sft" / "checkpoints"
  return {"skip": ("report", "sft"), "initial_checkpoint": str(sft), "eval_methods": ("masksearch",),
          "method_names": {"masksearch": row}}
