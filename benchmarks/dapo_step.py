"""Benchmark: where the time of a DAPO step goes on CPU, for the quickstart model.

The quickstart's tiny model (gin/models/tiny.gin) is first trained briefly on the
offline teacher's RAMP trajectories (so its rollouts search and answer like an agent,
not like random text), then runs DAPO on 1-mask RAMP paragraphs of the quickstart
world. Each training step's wall time is split into generation (prefill and decode on
the KV cache), retrieval (waiting for the Tantivy index), reward (scoring) and update
(the optimizer steps). Dynamic sampling's filter is off here so that every step does
the same amount of work whatever the rewards.

  .venv/bin/python benchmarks/dapo_step.py [--sft_steps 300] [--dapo_steps 8]

Writes benchmarks/results/dapo_step.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
PARTS = ("generation", "retrieval", "reward", "update")


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--trajectories", type=int, default=600, help="Offline-teacher RAMP trajectories for the SFT.")
  parser.add_argument("--sft_steps", type=int, default=300)
  parser.add_argument("--dapo_steps", type=int, default=8)
  parser.add_argument("--group_size", type=int, default=4)
  parser.add_argument("--prompts_per_step", type=int, default=4)
  args = parser.parse_args()
  os.environ.setdefault("MASKSEARCH_CACHE", tempfile.mkdtemp(prefix="bench-cache-"))
  work = Path(tempfile.mkdtemp(prefix="bench-dapo-"))

  import gin
  import optax

  import tasks  # noqa: F401  pylint: disable=unused-import
  from masksearch_jax import gin_flags
  from masksearch_jax.agent import offline_teacher
  from masksearch_jax.agent.rollout import RolloutConfig
  from masksearch_jax.agent.self_evolve import world_index
  from masksearch_jax.models.span_scorer import load_checkpoint
  from masksearch_jax.rl import dynamic_sampling  # noqa: F401 -- registers DynamicSampler for the binding below.
  from masksearch_jax.rl.dapo import train_dapo
  from masksearch_jax.rl.rewards import RewardFunction
  from masksearch_jax.training import trainer

  trajectories = work / "ramp.jsonl"
  started = time.perf_counter()
  offline_teacher.synthesize_to_file("ramp", trajectories, index=world_index("ramp"), limit=args.trajectories,
                                     progress=False)
  gin_flags.parse(gin_files=["models/tiny.gin", "runs/pretrain.gin"], bindings=[
      "MIXTURE_OR_TASK_NAME = 'trajectories_ramp'", "TASK_FEATURE_LENGTHS = {'inputs': 320, 'targets': 768}",
      f"TRAIN_STEPS = {args.sft_steps}", f"MODEL_DIR = '{work / 'sft'}'", "BATCH_SIZE = 8", "WARMUP_STEPS = 20",
      f"masksearch_jax.data.seqio_tasks.TrajectoryFiles.paths = {{'train': ['{trajectories}']}}"])
  sft = gin_flags.call_configured(gin.get_configurable(trainer.train))
  sft_seconds = time.perf_counter() - started
  _, model = load_checkpoint(work / "sft")  # The model as the SFT run's Gin configured it.
  with gin.unlock_config():
    gin.bind_parameter("masksearch_jax.rl.dynamic_sampling.DynamicSampler.filter_groups", False)
  rollout = RolloutConfig(batch_size=16, max_turns=4, max_turn_tokens=160, max_observation_tokens=400,
                          max_length=1536, top_k=3, temperature=1.0, prefill_buckets=(64, 256, 1024))
  summary = train_dapo(model=model, model_dir=str(work / "dapo"), total_steps=args.dapo_steps, kind="ramp",
                       num_masks=1, group_size=args.group_size, train_batch_size=args.prompts_per_step,
                       gen_batch_size=args.prompts_per_step, mini_batch_size=args.prompts_per_step,
                       micro_batch_size=args.group_size, rollout=rollout, reward_fn=RewardFunction(),
                       learning_rate=1e-4, optimizer=optax.adam, initial_checkpoint_path=str(work / "sft" / "checkpoints"),
                       checkpoint_period=10 ** 9, progress=True)
  # The first step compiles the sampler and the update; it is left out of the shares.
  measured = summary.batch_history[1:]
  seconds = {part: sum(b[f"time/{part}"] for b in measured) for part in PARTS}
  total = sum(seconds.values())
  steps = len(measured)
  searches = sum(b["searches_per_trajectory"] for b in measured) / steps
  lengths = sum(b["response_length/mean"] for b in measured) / steps
  result = {
      "machine": {"platform": platform.platform(), "processor": platform.processor(), "cpus": os.cpu_count()},
      "model": {"preset": "gin/models/tiny.gin", "parameters": model.num_params()},
      "sft": {"trajectories": args.trajectories, "steps": args.sft_steps, "final_loss": sft.final_loss,
              "seconds": sft_seconds},
      "dapo": {"steps": summary.final_step, "group_size": args.group_size, "prompts_per_step": args.prompts_per_step,
               "rollout": {"max_turns": rollout.max_turns, "max_turn_tokens": rollout.max_turn_tokens,
                           "max_length": rollout.max_length, "top_k": rollout.top_k},
               "rewards": summary.reward_history, "seconds_total": summary.seconds,
               "first_step_seconds": {p: summary.batch_history[0][f"time/{p}"] for p in PARTS},
               "measured_steps": steps, "searches_per_trajectory": searches, "response_tokens_mean": lengths,
               "seconds_by_part": seconds, "share_by_part": {k: v / total for k, v in seconds.items()}},
  }
  RESULTS.mkdir(parents=True, exist_ok=True)
  (RESULTS / "dapo_step.json").write_text(json.dumps(result, indent=2) + "\n")
  rows = "\n".join(f"| {part} | {seconds[part]:.1f} | {seconds[part] / total:.1%} | "
                   f"{seconds[part] / steps:.2f} |" for part in PARTS)
  table = (f"# Where a DAPO step's time goes (CPU, quickstart model)\n\n"
           f"Model: gin/models/tiny.gin ({model.num_params():,} parameters), briefly SFT-trained ({args.sft_steps} "
           f"steps on {args.trajectories} offline-teacher RAMP trajectories, final loss {sft.final_loss:.3f}); DAPO on "
           f"1-mask RAMP of the quickstart world, {args.prompts_per_step} prompts x G={args.group_size} per step, "
           f"{summary.final_step} steps, the first (compilation) left out of the table. Rollouts made "
           f"{searches:.2f} searches per trajectory and {lengths:.0f} response tokens on average. "
           f"Machine: {os.cpu_count()} CPUs, {platform.platform()}.\n\n"
           f"| part | seconds | share | seconds per step |\n|---|---|---|---|\n{rows}\n\n"
           f"Mean reward per step: {', '.join(f'{r:.3f}' for r in summary.reward_history)}.\n\n"
           f"Command: `.venv/bin/python benchmarks/dapo_step.py --sft_steps {args.sft_steps} "
           f"--dapo_steps {args.dapo_steps}`\n")
  (RESULTS / "dapo_step.md").write_text(table)
  print(table)


if __name__ == "__main__":
  main()
