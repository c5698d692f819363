"""Tests of the trajectory SFT tasks (tasks/trajectories.py)."""

from __future__ import annotations

import numpy as np
import pytest

from masksearch_jax.agent import protocol
from masksearch_jax.data import input_pipeline
from masksearch_jax.data.trajectories import Segment, Trajectory, TrajectoryWriter


def _trajectory(i: int, kind: str) -> Trajectory:
  observation = "\n\n" + protocol.format_observation([(f"Doc {i}", f"Tabudo Muzu was born in Vitole {i}.")]) + "\n\n"
  return Trajectory(
      id=f"{kind}-{i}", kind=kind, prompt=protocol.qa_prompt(f"Where was Tabudo Muzu {i} born?"),
      segments=(Segment("model", f"<think> find {i} </think>\n<search> Tabudo Muzu {i} </search>"),
                Segment("observation", observation),
                Segment("model", f"<think> found </think>\n<answer> Vitole {i} </answer>")),
      answer=f"Vitole {i}", stop_reason="answer")


@pytest.fixture
def trajectory_file(tmp_path):
  path = tmp_path / "traj.jsonl"
  with TrajectoryWriter(path) as writer:
    for i in range(6):
      writer.write(_trajectory(i, "qa" if i % 2 else "ramp"))
  return path


def test_trajectory_batches_weight_only_the_models_tokens(tiny_tasks, tiny_world_vocabulary, trajectory_file):
  tiny_tasks(f"masksearch_jax.data.seqio_tasks.TrajectoryFiles.paths = {{'train': ['{trajectory_file}']}}")
  cfg = input_pipeline.DatasetConfig("trajectories", {"inputs": 256, "targets": 192}, batch_size=6,
                                     shuffle=False, pack=False)
  batch = next(input_pipeline.get_dataset(cfg, num_epochs=1).as_numpy_iterator())
  vocab = tiny_world_vocabulary
  for row in range(6):
    tokens, weights = batch["decoder_target_tokens"][row], batch["decoder_loss_weights"][row]
    learnt = vocab.decode([int(t) for t in tokens[weights > 0] if t != vocab.eos_id])
    assert "<search>" in learnt and "<answer>" in learnt
    assert "<information>" not in learnt and "was born in" not in learnt  # Observations carry no loss.
    assert "Answer the given question" not in learnt  # Nor does the prompt.
    read = vocab.decode([int(t) for t in tokens[(weights == 0) & (tokens > 0)]])
    assert "<information>" in read and "Answer the given question" in read
  assert np.all(batch["decoder_loss_weights"][batch["decoder_target_tokens"] == 0] == 0)


def test_kind_tasks_filter_trajectories(tiny_tasks, trajectory_file):
  import seqio
  tiny_tasks(f"masksearch_jax.data.seqio_tasks.TrajectoryFiles.paths = {{'train': '{trajectory_file}'}}")
  ds = seqio.get_mixture_or_task("trajectories_qa").get_dataset({"inputs": 256, "targets": 192}, shuffle=False,
                                                                 num_epochs=1)
  assert sorted(ex["id"].decode() for ex in ds.as_numpy_iterator()) == ["qa-1", "qa-3", "qa-5"]


def test_missing_trajectory_files_are_a_clear_error(tiny_tasks, tmp_path):
  with pytest.raises(ValueError, match="TrajectoryFiles.paths"):
    input_pipeline.get_dataset(input_pipeline.DatasetConfig("trajectories", {"inputs": 64, "targets": 64}))
  tiny_tasks(f"masksearch_jax.data.seqio_tasks.TrajectoryFiles.paths = {{'train': '{tmp_path}/none.jsonl'}}")
  with pytest.raises(FileNotFoundError, match="none.jsonl does not exist"):
    input_pipeline.get_dataset(input_pipeline.DatasetConfig("trajectories", {"inputs": 64, "targets": 64}))


def test_ramp_tasks_by_mask_count_and_their_curriculum_mixtures(tiny_tasks, tmp_path):
  import seqio
  path = tmp_path / "ramp.jsonl"
  with TrajectoryWriter(path) as writer:
    for k in (1, 2, 3, 4):
      paragraph = "Tabudo Muzu was born in " + ", ".join([protocol.MASK] * k) + "."
      with_meta = _trajectory(k, "ramp")
      # Masks are counted in the prompt's paragraph (not its instruction), or read from meta["mask_num"].
      writer.write(Trajectory(**{**with_meta.__dict__, "id": f"ramp-m{k}", "prompt": protocol.ramp_prompt(paragraph)}))
      writer.write(Trajectory(**{**with_meta.__dict__, "id": f"ramp-meta-m{k}", "meta": {"mask_num": k}}))
  tiny_tasks(f"masksearch_jax.data.seqio_tasks.TrajectoryFiles.paths = {{'train': '{path}'}}")

  def ids(name):
    ds = seqio.get_mixture_or_task(name).get_dataset({"inputs": 256, "targets": 192}, shuffle=False, num_epochs=1)
    return sorted(ex["id"].decode() for ex in ds.as_numpy_iterator())

  for k in (1, 2, 3, 4):
    assert ids(f"trajectories_ramp_mask{k}") == [f"ramp-m{k}", f"ramp-meta-m{k}"]
  stage2 = seqio.get_mixture_or_task("trajectories_ramp_stage2")
  assert sorted(t.name for t in stage2.tasks) == ["trajectories_ramp_mask1", "trajectories_ramp_mask2"]
  assert len(seqio.get_mixture_or_task("trajectories_ramp_1to4").tasks) == 4
