"""Tests of the main job (masksearch quickstart): every stage, reuse, resume, redo and skip."""

from __future__ import annotations

import json

import gin
import pytest

from masksearch_jax import cli
from masksearch_jax.data import vocabularies

# The whole method at a test's budget: a small world, a few steps, a few held-out questions.
_SMALL = ["--gin.WORLD_SIZE=300", "--gin.SFT_STEPS=4", "--gin.QA_STEPS=2", "--gin.EVAL_QUESTIONS=4",
          "--gin_bindings=quickstart.run.ramp_examples = 24",
          "--gin_bindings=quickstart.run.qa_questions = 24",
          "--gin_bindings=quickstart.run.batch_size = 2",
          "--gin_bindings=quickstart.run.feature_lengths = {'inputs': 288, 'targets': 256}",
          "--gin_bindings=eval/rollout.RolloutConfig.max_turns = 2",
          "--gin_bindings=eval/rollout.RolloutConfig.max_turn_tokens = 24"]


@pytest.fixture(autouse=True)
def _clean_gin():
  gin.clear_config()
  yield
  gin.clear_config()


def _quickstart(workdir, *extra):
  gin.clear_config()
  return cli.main(["quickstart", f"--gin.WORKDIR='{workdir}'", *_SMALL, *extra])


def _stage_lines(out: str) -> dict[str, str]:
  """{stage: what happened to it} from the job's '[i/n] stage: ...' lines (the first verb)."""
  lines = {}
  for line in out.splitlines():
    if line.startswith("[") and "] " in line and ": " in line:
      name, what = line.split("] ", 1)[1].split(": ", 1)
      lines.setdefault(name, what.split()[0])
  return lines


@pytest.fixture(scope="module")
def finished_job(tmp_path_factory):
  """One whole run (DAPO left out: a 4-step policy gives every response the same reward)."""
  workdir = tmp_path_factory.mktemp("quickstart") / "qs"
  gin.clear_config()
  code = cli.main(["quickstart", f"--gin.WORKDIR='{workdir}'", *_SMALL, "--gin.SKIP=['dapo']"])
  gin.clear_config()
  assert code == 0
  return workdir


def test_every_stage_runs_and_the_summary_names_every_artifact(finished_job):
  summary = json.loads((finished_job / "summary.json").read_text())
  stages = summary["stages"]
  assert stages["dapo"] is None  # Skipped.
  assert stages["world"]["passages"] > 400 and stages["index"]["passages"] == stages["world"]["passages"]
  # The vocabulary comes after the teacher and knows the words it writes ('▁ ne e d s' without them).
  vocab = vocabularies.sentencepiece_vocabulary(finished_job / "vocabulary" / "spm.model")
  assert vocab.tokenizer.encode(" needs facts", out_type=str) == ["▁needs", "▁facts"]
  for k in (1, 2, 3, 4):
    records = (finished_job / "ramp" / f"mask{k}.jsonl").read_text().splitlines()
    assert len(records) == 24 and all(json.loads(r)["ext"]["mask_num"] == k for r in records)
  kept = stages["trajectories"]["kept"]
  assert set(kept) == {"ramp-mask1.jsonl", "ramp-mask2.jsonl", "ramp-mask3.jsonl", "ramp-mask4.jsonl",
                       "qa-train.jsonl"} and min(kept.values()) > 0
  # SFT ran MaskSearch's four curriculum stages (the checkpoint records them), then downstream SFT.
  last = max((finished_job / "sft" / "checkpoints").iterdir(), key=lambda p: int(p.name))
  meta = json.loads((last / "meta" / "metadata").read_text())
  assert meta["stages"] == [[f"trajectories_ramp_stage{k}", 1] for k in (1, 2, 3, 4)] and meta["step"] == 4
  assert stages["sft"]["steps"] == 4 and stages["qa_sft"]["steps"] == 2
  assert summary["checkpoint"] == stages["qa_sft"]["checkpoint"]
  runs = stages["eval"]["runs"]
  assert set(runs) == {"masksearch/world-test", "rag/world-test"}
  for name, run in runs.items():
    result = json.loads((finished_job / "eval" / name / "result.json").read_text())
    assert result["metrics"]["questions"] == 4 and result["settings"]["split"] == "test"
    assert result["metrics"]["recall"] == run["recall"]
  table = (finished_job / "report" / "report.md").read_text()
  assert "masksearch" in table and "rag" in table and (finished_job / "report" / "report.png").stat().st_size > 0


def test_second_run_reuses_every_stage(finished_job, capsys):
  assert _quickstart(finished_job, "--gin.SKIP=['dapo']") == 0
  lines = _stage_lines(capsys.readouterr().out)
  assert lines.pop("dapo") == "skipped"
  assert set(lines.values()) == {"reusing"}, lines


def test_changed_setting_redoes_that_stage_and_later_ones_only(finished_job, capsys):
  assert _quickstart(finished_job, "--gin.SKIP=['dapo']", "--gin.QA_STEPS=3") == 0
  lines = _stage_lines(capsys.readouterr().out)
  assert [lines[s] for s in ("world", "index", "ramp_data", "trajectories", "vocabulary", "sft")] == ["reusing"] * 6
  assert [lines[s] for s in ("qa_sft", "eval", "report")] == ["running"] * 3
  assert json.loads((finished_job / "summary.json").read_text())["stages"]["qa_sft"]["steps"] == 3


def test_interrupted_stage_resumes(finished_job, capsys):
  # As if the run died while evaluating the RAG baseline: the stage started, its episodes were written,
  # but neither the evaluation's result nor the stage's record was.
  result_path = next((finished_job / "eval" / "rag").glob("*/result.json"))
  before = json.loads(result_path.read_text())["metrics"]
  result_path.unlink()
  (finished_job / "stages" / "eval.json").unlink()
  assert _quickstart(finished_job, "--gin.SKIP=['dapo']", "--gin.QA_STEPS=3") == 0
  lines = _stage_lines(capsys.readouterr().out)
  assert lines["qa_sft"] == "reusing" and lines["eval"] == "resuming"
  assert lines["report"] == "running"  # A stage after one that ran is redone.
  assert json.loads(result_path.read_text())["metrics"] == before


def test_unknown_stage_and_missing_inputs_are_one_clear_error(tmp_path, capsys):
  assert _quickstart(tmp_path / "qs", "--gin.SKIP=['sfft']") == 2
  err = capsys.readouterr().err.strip()
  assert "sfft" in err and "\n" not in err
  assert _quickstart(tmp_path / "qs", "--gin.SKIP=['world', 'index', 'vocabulary', 'ramp_data', 'trajectories', "
                     "'sft', 'dapo', 'qa_sft']") == 2
  err = capsys.readouterr().err.strip()
  assert "stage 'eval' needs stage 'world'" in err and "\n" not in err


def test_unknown_binding_is_one_clear_error(tmp_path, capsys):
  assert cli.main(["quickstart", f"--gin.WORKDIR='{tmp_path}'", "--gin_bindings=world.WorldConfig.sise = 3"]) == 2
  err = capsys.readouterr().err.strip()
  assert "sise" in err and "\n" not in err


def test_a_users_corpus_replaces_the_worlds_passages(tmp_path, capsys):
  from masksearch_jax.data import world_io
  from masksearch_jax.data.world import WorldConfig
  world_io.generate_and_write(WorldConfig(seed=5, size=200), tmp_path / "src", formats=["wiki18"])
  corpus = tmp_path / "src" / "formats" / "wiki18" / "wiki-18.jsonl.gz"
  code = _quickstart(tmp_path / "qs", f"--gin_bindings=quickstart.run.corpus = '{corpus}'",
                     "--gin.SKIP=['trajectories', 'sft', 'dapo', 'qa_sft', 'eval', 'report']")
  assert code == 0
  stages = json.loads((tmp_path / "qs" / "summary.json").read_text())["stages"]
  source = json.loads((tmp_path / "src" / "manifest.json").read_text())
  assert stages["index"]["corpus"] == str(corpus)
  assert stages["index"]["passages"] == source["counts"]["passages"] != stages["world"]["passages"]
  # RAMP paragraphs come from the corpus: their titles are the seed-5 world's, not the job's world's.
  corpus_titles = {e["name"] for e in map(json.loads, (tmp_path / "src" / "entities.jsonl").read_text().splitlines())}
  records = [json.loads(r) for r in (tmp_path / "qs" / "ramp" / "mask1.jsonl").read_text().splitlines()]
  assert records and all(r["ext"]["title"] in corpus_titles for r in records)
