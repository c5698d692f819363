"""Reports: one run's table, several runs joined (mean and spread over seeds), markdown, JSON, PNG."""

from __future__ import annotations

import json
import math

import pytest

from masksearch_jax import cli
from masksearch_jax.eval import report


def fake_run(run_dir, method, seed, scores, mode="agent"):
  """A run directory as `runner.evaluate` leaves it: LABEL/result.json per benchmark."""
  for label, (recall, em) in scores.items():
    directory = run_dir / label
    directory.mkdir(parents=True)
    settings = {"method": method, "seed": seed, "label": label, "benchmark": label, "checkpoint": "/ckpt",
                "mode": mode}
    metrics = {"recall": recall, "em": em, "f1": em, "judge": None, "questions": 10}
    (directory / "result.json").write_text(json.dumps({"settings": settings, "metrics": metrics}))
  return run_dir


def test_joining_runs_gives_mean_and_spread_per_method(tmp_path):
  a0 = fake_run(tmp_path / "a0", "masksearch", 0, {"hotpotqa": (0.5, 0.25), "musique": (0.3, 0.1)})
  a1 = fake_run(tmp_path / "a1", "masksearch", 1, {"hotpotqa": (0.7, 0.35), "musique": (0.5, 0.3)})
  b = fake_run(tmp_path / "b", "rag", 0, {"hotpotqa": (0.2, 0.1)}, mode="rag")
  table = report.build_table(report.load_results([a0, a1, b]), "recall")
  assert table["benchmarks"] == ["hotpotqa", "musique"]
  ms, rag = table["rows"]
  assert ms["method"] == "masksearch" and len(ms["runs"]) == 2
  assert ms["cells"]["hotpotqa"]["mean"] == pytest.approx(0.6)
  assert ms["cells"]["hotpotqa"]["std"] == pytest.approx(math.sqrt(0.02))  # Sample std of 0.5 and 0.7.
  # Average: per run (0.4, 0.6), then mean 0.5 and their spread.
  assert ms["average"]["mean"] == pytest.approx(0.5) and ms["average"]["std"] == pytest.approx(math.sqrt(0.02))
  assert rag["cells"] == {"hotpotqa": {"mean": 0.2, "std": None, "n": 1, "values": [0.2]}}
  assert rag["average"]["mean"] == pytest.approx(0.2) and rag["average"]["std"] is None

  markdown = report.markdown_table(table)
  assert markdown.splitlines()[0] == "| Method | hotpotqa | musique | Avg. |"
  assert "| masksearch | 60.0 ± 14.1 (n=2) | 40.0 ± 14.1 (n=2) | 50.0 ± 14.1 (n=2) |" in markdown
  assert "| rag | 20.0 | – | 20.0 |" in markdown


def test_write_report_and_the_report_command(tmp_path, capsys):
  a0 = fake_run(tmp_path / "a0", "masksearch", 0, {"world-test": (0.5, 0.25)})
  b = fake_run(tmp_path / "b", "prompt-only", 0, {"world-test": (0.0, 0.0)})
  assert cli.main(["report", str(a0), str(b), "--out", str(tmp_path / "joined")]) == 0
  printed = capsys.readouterr().out
  assert "### Token recall (%)" in printed and "| prompt-only | 0.0 | 0.0 |" in printed
  out = tmp_path / "joined"
  assert (out / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  content = json.loads((out / "report.json").read_text())
  assert [t["metric"] for t in content["tables"]] == ["recall", "em", "f1"]  # No judge values: no judge table.
  assert content["tables"][1]["rows"][0]["cells"]["world-test"]["mean"] == 0.25
  assert (out / "report.md").read_text().startswith("### Token recall (%)")


def test_report_errors_are_one_line(tmp_path, capsys):
  assert cli.main(["report", str(tmp_path / "nowhere")]) == 2
  assert "run directory not found" in capsys.readouterr().err
  (tmp_path / "empty").mkdir()
  assert cli.main(["report", str(tmp_path / "empty")]) == 2
  assert "holds no evaluation result" in capsys.readouterr().err
