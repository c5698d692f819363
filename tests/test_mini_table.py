"""Tests of the miniature MaskSearch table (masksearch table, gin/runs/mini_masksearch_table.gin)."""

from __future__ import annotations

import json

import gin
import pytest

from masksearch_jax import cli
from masksearch_jax.data.trajectories import read_trajectories

_ROWS = "['downstream SFT', 'plain RAG', 'prompt-only']"
_TINY = ["--gin.WORLD_SIZE=300", "--gin.SEEDS=[3]", "--gin.QA_STEPS=2", "--gin.EVAL_QUESTIONS=2",
         f"--gin_bindings=mini_table.run_table.rows = {_ROWS}",
         "--gin_bindings=quickstart.run.ramp_examples = 16",
         "--gin_bindings=quickstart.run.qa_questions = 0",
         "--gin_bindings=quickstart.run.batch_size = 2",
         "--gin_bindings=quickstart.run.feature_lengths = {'inputs': 160, 'targets': 256}",
         "--gin_bindings=quickstart.run.length_buckets = [(256, 2)]",
         "--gin_bindings=eval/rollout.RolloutConfig.max_turns = 2",
         "--gin_bindings=eval/rollout.RolloutConfig.max_turn_tokens = 16"]


@pytest.fixture(autouse=True)
def _clean_gin():
  gin.clear_config()
  yield
  gin.clear_config()


def _table(workdir, *extra):
  gin.clear_config()
  return cli.main(["table", f"--gin.TABLE_DIR='{workdir}'", *_TINY, *extra])


def test_rows_share_data_hold_out_a_question_type_and_join_into_one_report(tmp_path, capsys):
  assert _table(tmp_path / "t") == 0
  report = json.loads((tmp_path / "t" / "report" / "report.json").read_text())
  table = report["tables"][0]
  assert {row["method"] for row in table["rows"]} == {"downstream SFT", "plain RAG", "prompt-only"}
  assert sorted(table["benchmarks"]) == ["held-out type", "in-domain"]
  assert all(set(row["cells"]) == {"in-domain", "held-out type"} and row["cells"]["in-domain"]["n"] == 1
             for row in table["rows"])
  # One world, index and trajectory set for every row; downstream training never saw the held-out type.
  assert not (tmp_path / "t" / "seed-3" / "downstream-sft" / "world").exists()
  train_types = {t.meta["question_type"] for t in
                 read_trajectories(tmp_path / "t" / "seed-3" / "downstream-sft" / "qa_sft" / "train-types.jsonl")}
  assert train_types and "bridge_comparison" not in train_types
  all_types = {t.meta["question_type"] for t in read_trajectories(tmp_path / "t" / "data" / "trajectories" /
                                                                   "qa-train.jsonl")}
  assert "bridge_comparison" in all_types
  # Every evaluation is on the test split (entities never trained on), by the column's types.
  for result_path in (tmp_path / "t").glob("seed-3/*/eval/*/*/result.json"):
    result = json.loads(result_path.read_text())
    assert result["settings"]["split"] == "test"
    held_out = result["settings"]["label"] == "held-out type"
    assert result["settings"]["types"] == (["bridge_comparison"] if held_out else
                                           ["compositional", "inference", "comparison"])
  # Plain RAG evaluates the downstream-SFT policy; prompt-only the untrained one.
  rag = json.loads(next((tmp_path / "t").glob("seed-3/plain-rag/eval/*/*/result.json")).read_text())
  assert rag["settings"]["mode"] == "rag" and "downstream-sft/qa_sft" in rag["settings"]["checkpoint"]
  prompt_only = json.loads(next((tmp_path / "t").glob("seed-3/prompt-only/eval/*/*/result.json")).read_text())
  assert prompt_only["settings"]["checkpoint"].endswith("untrained")

  capsys.readouterr()
  assert _table(tmp_path / "t") == 0  # A rerun reuses every finished run.
  out = capsys.readouterr().out
  assert "running" not in out and "resuming" not in out and out.count("eval: reusing") == 3


def test_row_names_and_dependencies_are_checked(tmp_path, capsys):
  assert _table(tmp_path / "t", "--gin_bindings=mini_table.run_table.rows = ['RAMP SFT']") == 2
  assert "RAMP SFT" in capsys.readouterr().err
  assert _table(tmp_path / "t", "--gin_bindings=mini_table.run_table.rows = ['plain RAG']") == 2
  err = capsys.readouterr().err.strip()
  assert "needs row 'downstream SFT'" in err and "\n" not in err
