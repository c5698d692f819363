"""SFT on agent trajectories: full padded rows, packed rows and length buckets, side by side.

Agent trajectories vary from a few hundred to several thousand tokens, and attention grows with
the row's length, so how they are batched decides how much of the step is useful. One process,
the embedded world's question trajectories from the offline teacher (the quickstart's data stages
in a cache directory), the quickstart's tiny model, the mini table's row length, and the trainer's
own jitted step (`trainer.make_train_step`, AdamW, z-loss), for each batching:

- padded:   one trajectory per full row (`pack=False`)
- packed:   trajectories packed into full rows (`pack=True`, segment ids)
- buckets:  one trajectory per row, rows cut to the shortest bucket it fits
            (`length_buckets`, about the full batch's tokens per batch)

Every batch shape is compiled before timing; the batches are read before timing too (the input
pipeline's own rate is reported separately). Reported: model-written (loss-weighted) tokens and
trajectories trained per second; higher is better.

    .venv/bin/python benchmarks/sft_batching.py

Writes benchmarks/results/sft_batching.md and .json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from rollout import RESULTS, cpu_name, log, version  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
BUCKETS = ((768, 16), (1024, 12), (1280, 9), (1536, 8), (2048, 6))


def trajectories(cache: Path, world_size: int) -> Path:
  """The world's question trajectories (made once by the quickstart's data stages, then reused)."""
  import gin

  from masksearch_jax import quickstart
  from masksearch_jax.data import ramp_source, seqio_tasks  # noqa: F401  (their Gin configurables)
  from masksearch_jax.data.world import WorldConfig
  summary = quickstart.run(workdir=str(cache), world=WorldConfig(seed=0, size=world_size), ramp_examples=50,
                           skip=("sft", "dapo", "qa_sft", "eval", "report"), progress=True)
  gin.clear_config()
  return Path(summary["stages"]["trajectories"]["qa"])


def tiny_model():
  """The quickstart's model, as gin/models/tiny.gin configures it."""
  import gin

  from masksearch_jax import gin_flags
  from masksearch_jax.models.transformer import TransformerConfig
  gin_flags.parse(gin_files=["models/tiny.gin"], bindings=[])
  model = gin.get_configurable(TransformerConfig)()
  gin.clear_config()
  return model


def run(mode: str, path: Path, vocabulary: str, model, args) -> dict:
  import gin
  import jax
  import jax.numpy as jnp
  import optax
  from flax import linen as nn

  import masksearch_jax.data.seqio_tasks as seqio_tasks
  from masksearch_jax.data import vocabularies
  from masksearch_jax.data.input_pipeline import DatasetConfig, get_dataset
  from masksearch_jax.models.transformer import Decoder
  from masksearch_jax.training import trainer

  gin.clear_config()
  gin.bind_parameter("masksearch_jax.data.seqio_tasks.TrajectoryFiles.paths", {"train": [str(path)]})
  gin.bind_parameter("masksearch_jax.data.seqio_tasks.default_vocabulary.vocabulary",
                     vocabularies.sentencepiece_vocabulary(vocabulary))
  seqio_tasks.VOCABULARY.reset()
  cfg = DatasetConfig("trajectories_qa", {"inputs": args.inputs_length, "targets": args.targets_length}, "train",
                      args.batch_size, shuffle=True, seed=0, pack=mode == "packed",
                      length_buckets=BUCKETS if mode == "buckets" else ())
  started = time.perf_counter()
  it = get_dataset(cfg).as_numpy_iterator()
  batches = [next(it) for _ in range(args.steps)]
  pipeline_seconds = time.perf_counter() - started

  params = nn.unbox(Decoder(model).init(jax.random.PRNGKey(0), jnp.zeros((1, 8), jnp.int32))["params"])
  transform = optax.adamw(1e-3)
  step = jax.jit(trainer.make_train_step(model, transform, z_loss=1e-4), donate_argnums=(0,))

  def fresh():
    return {"params": jax.tree_util.tree_map(jnp.array, params), "opt_state": transform.init(params),
            "step": jnp.zeros((), jnp.int32)}

  shapes = {}
  for b in batches:
    shapes.setdefault(b["decoder_target_tokens"].shape, b)
  for b in shapes.values():  # Compile every shape first.
    jax.block_until_ready(step(fresh(), {k: jnp.asarray(v) for k, v in b.items()}))
  state = fresh()
  weighted = rows_tokens = examples = 0
  started = time.perf_counter()
  for b in batches:
    state, metrics = step(state, {k: jnp.asarray(v) for k, v in b.items()})
  jax.block_until_ready(state)
  seconds = time.perf_counter() - started
  for b in batches:
    weighted += float((b["decoder_loss_weights"] > 0).sum())
    rows_tokens += b["decoder_target_tokens"].size
    if "decoder_segment_ids" in b:
      examples += sum(len(set(row[row > 0].tolist())) for row in b["decoder_segment_ids"])
    else:
      examples += int((b["decoder_target_tokens"] != 0).any(axis=1).sum())
  real = sum(float(((b["decoder_target_tokens"] != 0) | (b["decoder_loss_weights"] > 0)).sum()) for b in batches)
  result = {"mode": mode, "steps": args.steps, "seconds": seconds, "trajectories": examples,
            "trajectories_per_s": examples / seconds, "weighted_tokens_per_s": weighted / seconds,
            "row_tokens_per_s": rows_tokens / seconds, "fill": real / rows_tokens,
            "shapes": sorted({f"{r}x{n}" for r, n in shapes}), "pipeline_batches_per_s": args.steps / pipeline_seconds}
  log(f"{mode}: {result['trajectories_per_s']:.2f} trajectories/s, {result['weighted_tokens_per_s']:,.0f} "
      f"weighted tokens/s, fill {result['fill']:.0%}, shapes {result['shapes']}")
  return result


def render(report: dict) -> str:
  base = next(r for r in report["runs"] if r["mode"] == "padded")
  lines = ["# SFT batching of agent trajectories (tiny model, one process)", "",
           f"{report['machine']}; jax {report['versions']['jax']}; world of {report['world_size']:,} people, "
           f"{report['steps']} steps per batching, rows of {report['row_length']} tokens "
           f"({report['batch_size']} per full batch); buckets {report['buckets']}.", "",
           "| batching | trajectories/s | loss-weighted tokens/s | vs padded | rows filled | batch shapes |",
           "|---|---:|---:|---:|---:|---|"]
  for r in report["runs"]:
    lines.append(f"| {r['mode']} | {r['trajectories_per_s']:.2f} | {r['weighted_tokens_per_s']:,.0f} | "
                 f"{r['trajectories_per_s'] / base['trajectories_per_s']:.2f}x | {r['fill']:.0%} | "
                 f"{', '.join(r['shapes'])} |")
  lines += ["", "Command: `.venv/bin/python benchmarks/sft_batching.py`"]
  return "\n".join(lines) + "\n"


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--world_size", type=int, default=4000)
  parser.add_argument("--steps", type=int, default=24, help="Timed steps per batching.")
  parser.add_argument("--batch_size", type=int, default=4)
  parser.add_argument("--inputs_length", type=int, default=288)
  parser.add_argument("--targets_length", type=int, default=2816)
  parser.add_argument("--cache", default=str(ROOT / "artifacts" / "bench_sft_batching"))
  args = parser.parse_args()
  path = trajectories(Path(args.cache), args.world_size)
  vocabulary = str(Path(args.cache) / "vocabulary" / "spm.model")
  model = tiny_model()
  runs = [run(mode, path, vocabulary, model, args) for mode in ("padded", "packed", "buckets")]
  import jax
  report = {"machine": cpu_name(), "versions": {"jax": version("jax")}, "world_size": args.world_size,
            "steps": args.steps, "batch_size": args.batch_size, "row_length": args.inputs_length + args.targets_length,
            "buckets": [list(b) for b in BUCKETS], "devices": jax.device_count(), "runs": runs}
  RESULTS.mkdir(parents=True, exist_ok=True)
  (RESULTS / "sft_batching.json").write_text(json.dumps(report, indent=1) + "\n")
  (RESULTS / "sft_batching.md").write_text(render(report))
  print(render(report))


if __name__ == "__main__":
  main()
