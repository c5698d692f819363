"""Reports of evaluation runs: a table like the paper's (markdown and JSON) and a bar chart.

One row per method, one column per benchmark label, and an average column, as in
MaskSearch's tables. A run directory (`runner.evaluate`) is one method and seed; when several
runs share a method (seeds), a cell shows the mean and the spread over them: `mean ± std`
with the sample standard deviation (n - 1), and `(n=K)` for the number of runs. Numbers are
percentages. The average of a row is the mean over its benchmarks; its spread is over the
runs' own averages when every run of the method covers every benchmark of the row.

`write_report(run_dirs, out_dir)` writes `report.md` (one table per metric: token recall, the
paper's metric, first; then EM, F1 and the LLM judge when there is one), `report.json` (the
same tables with every value) and `report.png` (the main metric's bars, with the spread as
error bars), each atomically.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Sequence

from masksearch_jax.data.atomic_files import atomic_output, atomic_text
from masksearch_jax.errors import ConfigError

RESULT = "result.json"
METRICS = ("recall", "em", "f1", "judge")
METRIC_TITLES = {"recall": "Token recall", "em": "Exact match", "f1": "F1", "judge": "LLM-judge accuracy"}


def load_results(run_dirs: Sequence[str | os.PathLike]) -> list[dict]:
  """The benchmark results of run directories (or of benchmark directories), in order.

  Each result is `result.json`'s content plus `run` (the run directory, which tells runs of
  one method apart).

  Raises:
    FileNotFoundError: A directory that does not exist or holds no result.
  """
  results = []
  for run_dir in run_dirs:
    path = Path(run_dir)
    if not path.is_dir():
      raise FileNotFoundError(f"run directory not found: {run_dir}")
    files = [path / RESULT] if (path / RESULT).is_file() else sorted(path.glob(f"*/{RESULT}"))
    if not files:
      raise FileNotFoundError(f"{run_dir} holds no evaluation result (no */{RESULT})")
    for file in files:
      result = json.loads(file.read_text(encoding="utf-8"))
      result["run"] = str(path if file.parent == path else file.parent.parent)
      results.append(result)
  return results


def _stats(values: list[float]) -> dict:
  n = len(values)
  mean = sum(values) / n
  std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else None
  return {"mean": mean, "std": std, "n": n, "values": values}


def build_table(results: Sequence[dict], metric: str = "recall") -> dict:
  """The table of one metric over results.

  Returns:
    `{"metric", "benchmarks": [labels], "rows": [{"method", "runs": [run dirs], "cells": {label:
    {"mean", "std", "n", "values"}}, "average": {...} or None}]}`; values are fractions in
    [0, 1], rows and columns in order of first appearance. A cell without values is absent.
  """
  if metric not in METRICS:
    raise ConfigError(f"unknown metric {metric!r}; choose from {', '.join(METRICS)}")
  labels: list[str] = []
  by_method: dict[str, dict[str, dict[str, float]]] = {}  # method -> run -> label -> value
  for result in results:
    label = result["settings"]["label"]
    if label not in labels:
      labels.append(label)
    value = result["metrics"].get(metric)
    runs = by_method.setdefault(result["settings"]["method"], {})
    if value is not None:
      runs.setdefault(result["run"], {})[label] = float(value)
    else:
      runs.setdefault(result["run"], {})
  rows = []
  for method, runs in by_method.items():
    cells = {}
    for label in labels:
      values = [scores[label] for scores in runs.values() if label in scores]
      if values:
        cells[label] = _stats(values)
    average = None
    if cells:
      complete = [scores for scores in runs.values() if set(scores) >= set(cells)]
      if len(complete) == len(runs):
        average = _stats([sum(s[label] for label in cells) / len(cells) for s in complete])
      else:
        average = {"mean": sum(c["mean"] for c in cells.values()) / len(cells), "std": None, "n": None,
                   "values": []}
    rows.append({"method": method, "runs": list(runs), "cells": cells, "average": average})
  return {"metric": metric, "benchmarks": labels, "rows": rows}


def _cell(stats: dict | None) -> str:
  if stats is None:
    return "–"
  text = f"{100 * stats['mean']:.1f}"
  if stats["std"] is not None:
    text += f" ± {100 * stats['std']:.1f}"
  if stats["n"] and stats["n"] > 1:
    text += f" (n={stats['n']})"
  return text


def markdown_table(table: dict) -> str:
  """The table as GitHub markdown: Method | each benchmark | Avg."""
  header = ["Method", *table["benchmarks"], "Avg."]
  lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + [":---:"] * (len(header) - 1)) + "|"]
  for row in table["rows"]:
    cells = [_cell(row["cells"].get(label)) for label in table["benchmarks"]]
    lines.append("| " + " | ".join([row["method"], *cells, _cell(row["average"])]) + " |")
  return "\n".join(lines) + "\n"


def bar_chart(table: dict, path: str | os.PathLike, *, overwrite: bool = True) -> Path:
  """A grouped bar chart (benchmarks and the average on the x axis, one bar per method) as PNG."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  groups = [*table["benchmarks"], "Avg."]
  rows = table["rows"]
  width = 0.8 / max(len(rows), 1)
  figure, axes = plt.subplots(figsize=(max(4.0, 1.2 * len(groups) * max(1, len(rows)) ** 0.5 + 2), 3.6), dpi=120)
  for k, row in enumerate(rows):
    stats = [row["cells"].get(label) for label in table["benchmarks"]] + [row["average"]]
    means = [100 * s["mean"] if s else 0.0 for s in stats]
    errors = [100 * s["std"] if s and s["std"] is not None else 0.0 for s in stats]
    positions = [g + (k - (len(rows) - 1) / 2) * width for g in range(len(groups))]
    axes.bar(positions, means, width, yerr=errors if any(errors) else None, capsize=3, label=row["method"])
  axes.set_xticks(range(len(groups)), groups)
  axes.set_ylabel(f"{METRIC_TITLES[table['metric']]} (%)")
  axes.set_ylim(0, 100)
  axes.legend(fontsize="small", frameon=False)
  axes.spines[["top", "right"]].set_visible(False)
  figure.tight_layout()
  path = Path(path)
  with atomic_output(path, overwrite=overwrite, directory=False) as tmp:
    figure.savefig(tmp, format="png")
  plt.close(figure)
  return path


def report(results: Sequence[dict], metric: str = "recall") -> dict:
  """Tables of every metric that has values (the main `metric` first), as `report.json` holds them."""
  order = [metric] + [m for m in METRICS if m != metric]
  tables = [build_table(results, m) for m in order]
  tables = [t for t in tables if any(row["cells"] for row in t["rows"])] or tables[:1]
  return {"main_metric": metric, "tables": tables,
          "runs": [{"run": r["run"], "method": r["settings"]["method"], "seed": r["settings"]["seed"],
                    "label": r["settings"]["label"], "checkpoint": r["settings"]["checkpoint"],
                    "mode": r["settings"]["mode"], "metrics": r["metrics"]} for r in results]}


def markdown_report(content: dict) -> str:
  """`report.md`: one titled table per metric."""
  parts = []
  for table in content["tables"]:
    parts.append(f"### {METRIC_TITLES[table['metric']]} (%)\n\n{markdown_table(table)}")
  return "\n".join(parts)


def write_report(run_dirs: Sequence[str | os.PathLike], out_dir: str | os.PathLike, metric: str = "recall"
                 ) -> dict[str, Path]:
  """Writes report.md, report.json and report.png of the runs into `out_dir`; returns their paths."""
  content = report(load_results(run_dirs), metric)
  out = Path(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  paths = {"md": out / "report.md", "json": out / "report.json", "png": out / "report.png"}
  with atomic_text(paths["md"], overwrite=True) as f:
    f.write(markdown_report(content))
  with atomic_text(paths["json"], overwrite=True) as f:
    json.dump(content, f, ensure_ascii=False, indent=2)
    f.write("\n")
  bar_chart(content["tables"][0], paths["png"])
  return paths
