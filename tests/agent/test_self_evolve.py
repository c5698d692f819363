"""The policy as its own teacher: judged rollouts, and self-evolving distillation as a Gin run."""

from __future__ import annotations

import json

from conftest import ScriptedPolicy
from fake_openai_server import Reply

from masksearch_jax import cli
from masksearch_jax.agent.llm_backends import OpenAICompatibleBackend
from masksearch_jax.agent.rollout import RolloutConfig, SearchAgent
from masksearch_jax.agent.self_evolve import recall_of, synthesize_with_policy
from masksearch_jax.agent.synthesis import LLMJudge, qa_task, ramp_task
from masksearch_jax.data.trajectories import read_trajectories

MASKED = "Paris is the [mask] of France and sits on the river [mask]."
RAMP = ramp_task({"masked_paragraph": MASKED, "targets": "Paris is the capital of France and sits on the river Seine.",
                  "masks": ["capital", "Seine"], "passage_id": "p-paris-1", "title": "Paris"})
RIGHT = qa_task({"id": "q1", "question": "Which river flows through Paris?", "answer": "Seine",
                 "aliases": ["the Seine river"]})
WRONG = qa_task({"id": "q2", "question": "Where is the Louvre?", "answer": "Paris"})
SILENT = qa_task({"id": "q3", "question": "Who said foo?", "answer": "Bar Baz"})


def turn(think, tag, text):
  return f"<think> {think} </think>\n<{tag}> {text} </{tag}>"


SCRIPTS = {
    RAMP.prompt: [turn("look", "search", "paris france capital seine"),
                  turn("found", "answer", "Paris is the capital of France and sits on the river Seine.")],
    RIGHT.prompt: [turn("look", "search", "river seine paris"), turn("found", "answer", "the Seine")],
    WRONG.prompt: [turn("guess", "answer", "London")],
    SILENT.prompt: ["no idea", "still none", "nothing"],
}


def scripted_agent(vocab, retriever):
  rollout = RolloutConfig(batch_size=2, max_turns=3, max_turn_tokens=200, max_length=1500, top_k=2,
                          retry_backoff=0.0)
  policy = ScriptedPolicy(vocab, SCRIPTS, batch_size=2, capacity=1500, max_new_tokens=200)
  return SearchAgent(None, None, vocab, retriever, rollout, sampler=policy)


def test_recall_judges_ramp_fills_and_answers():
  assert recall_of(RAMP, "Paris is the capital of France and sits on the river Seine.") == 1.0
  assert recall_of(RAMP, "Paris is the capital of France and sits on the river Thames.") == 0.5
  assert recall_of(RAMP, "Paris is the capital city of France, on the Seine.") == 0.0  # Text outside the masks changed.
  assert recall_of(RIGHT, "Seine") == 1.0 and recall_of(WRONG, "London") == 0.0 and recall_of(RIGHT, None) == 0.0


def test_policy_synthesis_keeps_what_the_judge_accepts_and_resumes(vocab, retriever, tmp_path):
  out = tmp_path / "policy.jsonl"
  stats = synthesize_with_policy("qa", [RIGHT, WRONG, SILENT], scripted_agent(vocab, retriever), out, progress=False)
  assert (stats.attempted, stats.kept, stats.no_answer) == (3, 1, 1)
  assert stats.acceptance_rate == 1 / 3 and stats.searches == 1
  [kept] = list(read_trajectories(out))
  assert kept.id == "qa-q1" and kept.answer == "the Seine" and kept.reward == 1.0
  assert kept.meta["judge"] == "recall" and kept.meta["teacher"] == "policy"
  assert kept.token_ids is not None and 0 in kept.model_token_mask

  ramp = synthesize_with_policy("ramp", [RAMP], scripted_agent(vocab, retriever), out, progress=False)
  assert ramp.kept == 1
  ramp_trajectory = [t for t in read_trajectories(out) if t.kind == "ramp"][0]
  assert "p-paris-1" not in ramp_trajectory.segments[1].text
  assert "Paris is the capital of France and sits" not in ramp_trajectory.segments[1].text  # Its own passage is hidden.

  again = synthesize_with_policy("qa", [RIGHT, WRONG], scripted_agent(vocab, retriever), out, progress=False)
  assert again.skipped == 1 and again.attempted == 1 and again.kept == 0
  assert len(list(read_trajectories(out))) == 2


def test_an_llm_judge_decides_and_a_failed_verdict_falls_back_to_recall(vocab, retriever, tmp_path, fake_openai):
  # The judge overrules recall both ways on the questions, and gives no verdict on the RAMP fill.
  server = fake_openai({"the Seine": [Reply("Judgement: incorrect")], "London": [Reply("Judgement: correct")],
                        "river Seine.": [Reply("I cannot tell.")]})
  judge = LLMJudge(OpenAICompatibleBackend(server.base_url, "judge", api_key_env=None, max_retries=0))
  out = tmp_path / "judged.jsonl"
  stats = synthesize_with_policy("qa", [RIGHT, WRONG], scripted_agent(vocab, retriever), out, llm_judge=judge,
                                 progress=False)
  assert stats.kept == 1 and stats.judge_failures == 0
  stats = synthesize_with_policy("ramp", [RAMP], scripted_agent(vocab, retriever), out, llm_judge=judge,
                                 progress=False)
  assert stats.kept == 1 and stats.judge_failures == 1
  assert [(t.id, t.meta["judge"], t.reward) for t in read_trajectories(out)] == [
      ("qa-q2", "llm", 0.0), (RAMP.id, "recall", 1.0)]


def test_self_evolve_runs_rounds_keeps_each_rounds_data_and_resumes(tiny_run_gin, tmp_path, capsys):
  teacher = tmp_path / "teacher.jsonl"
  assert cli.main(["synthesize", "--kind", "ramp", "--out", str(teacher), "--limit", "12",
                   f"--gin_file={tiny_run_gin}"]) == 0
  assert len(list(read_trajectories(teacher))) >= 6
  workdir = tmp_path / "evolve"
  args = ["self-evolve", "--gin_file=models/tiny.gin", "--gin_file=runs/self_evolve.gin", f"--gin_file={tiny_run_gin}",
          f"--gin.SELF_EVOLVE_DIR='{workdir}'", f"--gin.INITIAL_TRAJECTORIES=['{teacher}']", "--gin.ROUNDS=2",
          "--gin.STEPS_PER_ROUND=3", "--gin.TASKS_PER_ROUND=3",
          "--gin_bindings=rollout.RolloutConfig.batch_size = 2",
          "--gin_bindings=rollout.RolloutConfig.max_turn_tokens = 16",
          "--gin_bindings=rollout.RolloutConfig.max_turns = 2",
          "--gin_bindings=rollout.RolloutConfig.max_length = 768",
          "--gin_bindings=rollout.RolloutConfig.prefill_buckets = (64, 256)"]
  assert cli.main(args) == 0
  summary = json.loads((workdir / "summary.json").read_text())
  assert [r["round"] for r in summary] == [0, 1]
  r0, r1 = summary
  assert r0["trained_on"] == [str(teacher)]
  # Round 1 trains on the first teacher's data and round 0's rollouts, starting from round 0's student.
  assert r1["trained_on"] == [str(teacher), r0["trajectories"]]
  assert (workdir / "round-1" / "model" / "checkpoints").is_dir()
  for record in summary:
    assert record["attempted"] == 3 and record["acceptance_rate"] == record["kept"] / 3
    assert (workdir / f"round-{record['round']}" / "trajectories.jsonl").is_file()
    assert json.loads((workdir / f"round-{record['round']}" / "round.json").read_text()) == record
  # The tasks differ between rounds (round k starts k * TASKS_PER_ROUND later).
  printed = capsys.readouterr()
  assert "round 1: acceptance" in printed.out and "self-evolve round 0" in printed.err
  # A rerun finds every round done and trains nothing.
  before = (workdir / "round-1" / "round.json").stat().st_mtime_ns
  assert cli.main(args) == 0
  assert (workdir / "round-1" / "round.json").stat().st_mtime_ns == before
  assert "self-evolve round" not in capsys.readouterr().err

  # A round's student as the teacher of `masksearch synthesize`.
  out = tmp_path / "student.jsonl"
  assert cli.main(["synthesize", "--kind", "qa", "--teacher", "policy", "--checkpoint", r0["checkpoint"],
                   "--out", str(out), "--limit", "2", f"--gin_file={tiny_run_gin}", *args[-5:]]) == 0
  printed = capsys.readouterr().err
  assert "policy synthesis qa" in printed and " of 2 (" in printed
  assert out.exists()
