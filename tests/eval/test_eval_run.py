"""`evaluate` and `masksearch eval`: records, metrics, predictions, reports, resumption and errors.

A scripted agent (answers chosen per question) checks the bookkeeping with known numbers; a tiny
random policy checkpoint runs the real search agent end to end through the command line.
"""

from __future__ import annotations

import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest
from conftest import TINY_WORLD_CONFIG

from masksearch_jax import cli
from masksearch_jax.agent import protocol
from masksearch_jax.agent import rollout as rollout_module
from masksearch_jax.data.trajectories import MODEL, Segment, Trajectory, read_trajectories
from masksearch_jax.errors import ConfigError
from masksearch_jax.eval import metrics, predictions, runner
from masksearch_jax.models.transformer import Decoder, TransformerConfig
from masksearch_jax.training.checkpoints import save_params


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, tiny_world_vocabulary):
  """A tiny random policy over the tiny world's vocabulary, saved as a parameter checkpoint."""
  config = TransformerConfig(vocab_size=tiny_world_vocabulary.vocab_size, num_layers=1, d_model=32, num_heads=2,
                             num_kv_heads=1, mlp_dim=64)
  params = nn.unbox(Decoder(config).init(jax.random.PRNGKey(0), jnp.zeros((1, 4), jnp.int32))["params"])
  return str(save_params(params, tmp_path_factory.mktemp("policy") / "ckpt", config))


class ScriptedAgent:
  """Stands in for `SearchAgent`: question k gets outcome k % 6 (see OUTCOMES); yields in reverse order."""

  # (answer, stop reason, searches, failed searches): right, wrong, right, over length, right, no answer + error.
  OUTCOMES = [("gold", "answer", 1, 0), ("London", "answer", 2, 0), ("gold", "answer", 0, 0),
              (None, "max_length", 3, 0), ("gold", "answer", 1, 0), (None, "eos", 1, 1)]
  seen: list = []

  def __init__(self, config, params, vocabulary, retriever, rollout=None, **kwargs):
    self.rollout = rollout

  def run(self, tasks, seed=0):
    ScriptedAgent.seen.append((self.rollout, list(tasks)))
    for task in reversed(tasks):
      answer, reason, searches, errors = self.OUTCOMES[task.meta["index"] % 6]
      answer = task.gold[0] if answer == "gold" else answer
      yield Trajectory(id=task.id, kind=task.kind, prompt=task.prompt, segments=(Segment(MODEL, "<think>"),),
                       stop_reason=reason, answer=answer, gold=task.gold, searches=tuple(["q"] * searches),
                       meta=dict(task.meta, turns=searches + 1, search_errors=["RetrievalError: down"] * errors))


@pytest.fixture
def scripted(monkeypatch):
  ScriptedAgent.seen = []
  monkeypatch.setattr(rollout_module, "SearchAgent", ScriptedAgent)
  return ScriptedAgent


def run_world(checkpoint, vocabulary, out, **kwargs):
  kwargs.setdefault("limit", 6)
  return runner.evaluate(checkpoint, "world", str(out), world=TINY_WORLD_CONFIG,
                         vocabulary=vocabulary.sentencepiece_model_file, progress=False, **kwargs)


def recompute(directory, shape="flashrag"):
  """Means recomputed from the written FlashRAG predictions (which carry the golden answers)."""
  answers = predictions.read_predictions(directory / "predictions" / predictions.FILE_NAMES[shape], shape)
  golds = {}
  for line in (directory / "predictions" / "flashrag.jsonl").read_text().splitlines():
    record = json.loads(line)
    golds[record["id"]] = record["golden_answers"]
  scores = [metrics.score_answer(answers[i], golds[i]) for i in golds]
  return {k: sum(getattr(s, k) for s in scores) / len(scores) for k in ("em", "f1", "recall")}


def test_scripted_run_writes_records_metrics_predictions_and_report(checkpoint, tiny_world_vocabulary, tmp_path,
                                                                     scripted):
  result = run_world(checkpoint, tiny_world_vocabulary, tmp_path / "run")
  m = result.metrics
  assert (m["questions"], m["em"], m["recall"], m["f1"]) == (6, 0.5, 0.5, 0.5)
  assert m["failures"] == {"no_answer": 2, "over_length": 1, "max_turns": 0, "eos": 1, "search_errors": 1,
                           "failed_searches": 1}
  assert m["avg_searches"] == pytest.approx(8 / 6) and m["avg_turns"] == pytest.approx(14 / 6)
  directory = tmp_path / "run" / "world-test"
  records = [json.loads(line) for line in (directory / "records.jsonl").read_text().splitlines()]
  assert [r["index"] for r in records] == list(range(6))  # File order, though episodes ended in reverse.
  assert records[1]["prediction"] == "London" and records[3]["prediction"] is None
  # The agent got Search-R1's question prompt, without passages.
  _, tasks = scripted.seen[0]
  assert tasks[0].prompt == protocol.qa_prompt(records[0]["question"])
  # Every written shape gives back the same numbers.
  for shape in ("flashrag", "hotpotqa", "2wiki"):
    again = recompute(directory, shape)
    assert again == pytest.approx({k: m[k] for k in again})
  hotpot = json.loads((directory / "predictions" / "hotpotqa.json").read_text())
  assert set(hotpot) == {"answer", "sp"} and hotpot["answer"][records[3]["id"]] == ""
  saved = json.loads((directory / "result.json").read_text())
  assert saved["metrics"] == m and saved["settings"]["method"] == "masksearch"
  assert (tmp_path / "run" / "report.md").read_text().count("| masksearch | 50.0 |") == 3  # recall, EM, F1.
  assert (tmp_path / "run" / "report.png").stat().st_size > 1000


def test_an_interrupted_run_resumes_and_a_finished_one_is_kept(checkpoint, tiny_world_vocabulary, tmp_path, scripted):
  first = run_world(checkpoint, tiny_world_vocabulary, tmp_path / "run")
  directory = first.directory
  # Interrupt: only three episodes were written, no result.
  lines = (directory / "trajectories.jsonl").read_text().splitlines()
  (directory / "trajectories.jsonl").write_text("\n".join(lines[:3]) + "\n" + lines[3][:40])  # A torn last line.
  for name in ("result.json", "records.jsonl"):
    (directory / name).unlink()
  scripted.seen.clear()
  again = run_world(checkpoint, tiny_world_vocabulary, tmp_path / "run")
  assert again.resumed == 3 and len(scripted.seen[0][1]) == 3
  assert again.metrics == first.metrics
  assert len(list(read_trajectories(directory / "trajectories.jsonl", skip_bad=True))) == 6
  # Finished: nothing runs again, unless overwritten.
  scripted.seen.clear()
  assert run_world(checkpoint, tiny_world_vocabulary, tmp_path / "run").metrics == first.metrics
  assert scripted.seen == []
  run_world(checkpoint, tiny_world_vocabulary, tmp_path / "run", overwrite=True)
  assert len(scripted.seen[0][1]) == 6
  # Other settings in the same benchmark directory, or another method in the run, are refused.
  with pytest.raises(ConfigError, match="other settings"):
    run_world(checkpoint, tiny_world_vocabulary, tmp_path / "run", limit=5)
  with pytest.raises(ConfigError, match="holds method 'masksearch'"):
    run_world(checkpoint, tiny_world_vocabulary, tmp_path / "run", method="rag", split="dev")


def test_rag_prompts_hold_the_retrieved_passages_and_allow_one_turn(checkpoint, tiny_world_vocabulary, tmp_path,
                                                                    scripted):
  result = run_world(checkpoint, tiny_world_vocabulary, tmp_path / "rag", mode="rag", method="rag", rag_top_k=2)
  rollout, tasks = scripted.seen[0]
  assert rollout.max_turns == 1
  prompt = tasks[0].prompt
  assert prompt.startswith("Answer the given question.") and prompt.count("Doc ") == 2
  assert prompt.rstrip().endswith("</information>")
  assert result.settings["mode"] == "rag" and result.settings["rag_top_k"] == 2
  assert result.metrics["avg_searches"] == pytest.approx(1 + 8 / 6)  # The retrieval counts as one search.


def test_masksearch_eval_end_to_end_with_a_tiny_policy(checkpoint, tiny_run_gin, tmp_path, capsys):
  common = [f"--gin_file={tiny_run_gin}", "--checkpoint", checkpoint, "--benchmark", "world", "--limit", "3",
            "--gin_bindings=rollout.RolloutConfig.batch_size = 2",
            "--gin_bindings=rollout.RolloutConfig.max_turn_tokens = 8",
            "--gin_bindings=rollout.RolloutConfig.max_turns = 2",
            "--gin_bindings=rollout.RolloutConfig.max_length = 768",
            "--gin_bindings=rollout.RolloutConfig.prefill_buckets = (64, 256)"]
  agent_dir, rag_dir = tmp_path / "agent", tmp_path / "rag"
  assert cli.main(["eval", *common, "--out", str(agent_dir), "--method", "prompt-only"]) == 0
  assert cli.main(["eval", *common, "--out", str(rag_dir), "--method", "rag", "--mode", "rag"]) == 0
  out = capsys.readouterr().out
  assert "prompt-only on world-test (3 questions, agent): recall" in out and "rag on world-test" in out
  for run_dir, method in ((agent_dir, "prompt-only"), (rag_dir, "rag")):
    directory = run_dir / "world-test"
    result = json.loads((directory / "result.json").read_text())
    assert result["settings"]["method"] == method and result["settings"]["rollout"]["temperature"] == 0.0
    assert result["metrics"]["questions"] == 3
    assert recompute(directory) == pytest.approx({k: result["metrics"][k] for k in ("em", "f1", "recall")})
    trajectories = list(read_trajectories(directory / "trajectories.jsonl"))
    assert len(trajectories) == 3 and all(t.token_ids for t in trajectories)
    failures = result["metrics"]["failures"]
    assert failures["no_answer"] == sum(t.answer is None for t in trajectories)
    for name in ("report.md", "report.json", "report.png"):
      assert (run_dir / name).is_file()
  assert cli.main(["report", str(agent_dir), str(rag_dir), "--out", str(tmp_path / "table")]) == 0
  table = json.loads((tmp_path / "table" / "report.json").read_text())["tables"][0]
  assert [row["method"] for row in table["rows"]] == ["prompt-only", "rag"] and table["benchmarks"] == ["world-test"]


@pytest.mark.parametrize("args, message", [
    (["--benchmark", "nq", "--path", "x"], "unknown benchmark 'nq'"),
    (["--benchmark", "hotpotqa", "--path", "/nonexistent/hotpot.json"], "benchmark file not found: /nonexistent"),
    (["--benchmark", "hotpotqa", "--path", "HOTPOT"], "needs a retriever"),
    (["--benchmark", "world", "--path", "/nonexistent/world"], "world directory not found"),
    (["--benchmark", "world", "--mode", "agent", "--index", "/nonexistent/index"], "index not found"),
])
def test_bad_input_is_one_line(checkpoint, tmp_path, capsys, args, message):
  hotpot = tmp_path / "hotpot.json"
  hotpot.write_text(json.dumps([{"_id": "a", "question": "Q?", "answer": "A", "supporting_facts": [], "context": []}]))
  args = [str(hotpot) if a == "HOTPOT" else a for a in args]
  assert cli.main(["eval", "--checkpoint", checkpoint, "--out", str(tmp_path / "run"), *args]) == 2
  err = capsys.readouterr().err.strip()
  assert err.startswith("masksearch eval: error:") and message in err and "\n" not in err


def test_missing_flags_and_checkpoint_are_one_line(tmp_path, capsys):
  assert cli.main(["eval", "--benchmark", "world", "--out", str(tmp_path)]) == 2
  assert "needs --checkpoint" in capsys.readouterr().err
  assert cli.main(["eval", "--checkpoint", str(tmp_path / "none"), "--benchmark", "world", "--out", str(tmp_path)]) == 2
  assert "checkpoint not found" in capsys.readouterr().err


def test_llm_judge_accuracy_counts_failures_and_judges_no_answer_wrong(checkpoint, tiny_world_vocabulary, tmp_path,
                                                                        scripted, fake_openai):
  from fake_openai_server import Reply

  from masksearch_jax.agent.llm_backends import OpenAICompatibleBackend
  from masksearch_jax.agent.synthesis import LLMJudge
  server = fake_openai({"London": [Reply("I cannot tell.")]}, default=Reply("Judgement: correct"))
  judge = LLMJudge(OpenAICompatibleBackend(server.base_url, "judge", api_key_env=None, max_retries=0))
  result = run_world(checkpoint, tiny_world_vocabulary, tmp_path / "judged", judge=judge)
  # Questions 0, 2, 4 judged right; 1 ("London") got no verdict; 3 and 5 had no answer: wrong, unasked.
  assert result.metrics["judge"] == pytest.approx(3 / 5) and result.metrics["judged"] == 5
  assert result.metrics["judge_failures"] == 1 and len(server.requests) == 4
  assert "judge 60.0%" in result.summary_line()
  table = json.loads((tmp_path / "judged" / "report.json").read_text())["tables"]
  assert [t["metric"] for t in table] == ["recall", "em", "f1", "judge"]
