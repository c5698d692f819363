"""Training tokens per second: this project's trainer step against `transformers` + torch on CPU.

One process, one model shape (the Qwen2 shape of benchmarks/rollout.py, about 17M parameters),
the same random weights (exported to `transformers` with `hf_io`), the same batch and sequence
length, float32, and a full step on both sides: forward, backward and an AdamW update. Ours is
`trainer.make_train_step` (the step `masksearch train` jits: loss with loss weights and z-loss,
normalised by the weighted tokens), on the default partitioner's single device; torch's is
`Qwen2ForCausalLM(labels=...)`, `loss.backward()` and `torch.optim.AdamW`. Rounds alternate
between the two; medians and bests of the timed rounds after a warm-up are reported.

The same run measures this machine's float32 matmul peak (a 2048 x 2048 product in JAX and in
torch; the larger counts) and this trainer's estimated model FLOP utilisation against it
(`TransformerConfig.flops_per_token`: 6 FLOPs per weight per token plus the causal attention
scores).

    .venv/bin/python benchmarks/train_throughput.py        # or: make bench-train

Writes benchmarks/results/train_throughput.md and .json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from rollout import RESULTS, SHAPE, cpu_name, log, make_model, summarize, version  # noqa: E402

TARGET = 1.5  # Issue 4: at least 1.5x torch's tokens per second.


def matmul_peak(size: int = 2048, repeats: int = 10) -> dict:
  """GFLOP/s of a float32 [size, size] x [size, size] product in JAX and in torch (best of `repeats`)."""
  import jax
  import jax.numpy as jnp
  import torch
  a = jax.random.normal(jax.random.PRNGKey(0), (size, size), jnp.float32)
  dot = jax.jit(jnp.dot)
  dot(a, a).block_until_ready()
  flops = 2 * size ** 3
  jax_best = min(_timed(lambda: dot(a, a).block_until_ready()) for _ in range(repeats))
  t = torch.randn(size, size)
  torch.mm(t, t)
  torch_best = min(_timed(lambda: torch.mm(t, t)) for _ in range(repeats))
  return {"jax_gflops": flops / jax_best / 1e9, "torch_gflops": flops / torch_best / 1e9}


def _timed(fn) -> float:
  start = time.perf_counter()
  fn()
  return time.perf_counter() - start


class OursStep:
  """This project's jitted train step on a fixed batch; the state is carried from step to step."""

  def __init__(self, config, params, tokens: np.ndarray):
    import jax
    import jax.numpy as jnp
    import optax

    from masksearch_jax.training import trainer
    optimizer = optax.adamw(1e-4)
    self.state = {"params": params, "opt_state": optimizer.init(params), "step": jnp.zeros((), jnp.int32)}
    self.step = jax.jit(trainer.make_train_step(config, optimizer, z_loss=1e-4), donate_argnums=(0,))
    self.batch = {"decoder_input_tokens": jnp.asarray(tokens[:, :-1]),
                  "decoder_target_tokens": jnp.asarray(tokens[:, 1:]),
                  "decoder_loss_weights": jnp.ones(tokens[:, 1:].shape, jnp.float32)}

  def __call__(self) -> float:
    self.state, metrics = self.step(self.state, self.batch)
    return float(metrics["loss"])  # Waits for the step.


class TorchStep:
  """`transformers`' Qwen2 with torch's AdamW on the same batch."""

  def __init__(self, hf_dir: Path, tokens: np.ndarray):
    import torch
    import transformers
    self.torch = torch
    self.model = transformers.AutoModelForCausalLM.from_pretrained(str(hf_dir), dtype=torch.float32).train()
    self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=1e-4)
    self.input_ids = torch.as_tensor(tokens[:, :-1], dtype=torch.long)
    self.labels = torch.as_tensor(tokens[:, :-1], dtype=torch.long)  # Shifted inside the model.

  def __call__(self) -> float:
    loss = self.model(input_ids=self.input_ids, labels=self.labels).loss
    loss.backward()
    self.optimizer.step()
    self.optimizer.zero_grad(set_to_none=True)
    return float(loss)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--batch", type=int, default=8)
  parser.add_argument("--seq_len", type=int, default=512)
  parser.add_argument("--steps", type=int, default=3, help="Steps per timed round.")
  parser.add_argument("--repeats", type=int, default=5, help="Timed rounds per system (after a warm-up).")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--out_dir", default=str(RESULTS))
  args = parser.parse_args()

  import jax
  import torch

  from masksearch_jax.models import hf_io
  started, load_start = time.time(), os.getloadavg()[0]
  config, params = make_model(args.seed)
  # Training unrolls the loop over this model's 4 layers (`TransformerConfig.scan_unroll`; the
  # parameters are the same); decoding in benchmarks/rollout.py keeps the rolled loop.
  config = dataclasses.replace(config, scan_unroll=config.num_layers)
  log(f"model: {config.num_params():,} parameters; batch {args.batch} x {args.seq_len} tokens")
  hf_dir = hf_io.export_hf(params, config, Path(tempfile.mkdtemp(prefix="bench-train-")) / "hf", model_type="qwen2")
  tokens = np.random.RandomState(args.seed).randint(3, config.vocab_size, (args.batch, args.seq_len + 1))
  systems = {"ours": OursStep(config, params, tokens), "torch": TorchStep(hf_dir, tokens)}
  first_loss = {name: step() for name, step in systems.items()}  # Warm-up (and compilation).
  for step in systems.values():
    step()
  times: dict[str, list[float]] = {name: [] for name in systems}
  for round_ in range(args.repeats):
    for name, step in systems.items():
      start = time.perf_counter()
      for _ in range(args.steps):
        step()
      times[name].append((time.perf_counter() - start) / args.steps)
    log(f"round {round_ + 1}/{args.repeats}: " + ", ".join(f"{n} {t[-1]:.3f}s/step" for n, t in times.items()))
  peak = matmul_peak()
  peak_flops = max(peak.values()) * 1e9
  tokens_per_step = args.batch * args.seq_len
  results = {}
  for name, values in times.items():
    stats = summarize(values)
    results[name] = {**stats, "tokens_per_second": tokens_per_step / stats["median"],
                     "best_tokens_per_second": tokens_per_step / stats["best"],
                     "mfu": config.flops_per_token(args.seq_len) * tokens_per_step / stats["median"] / peak_flops,
                     "first_loss": first_loss[name]}
  ratio = results["ours"]["tokens_per_second"] / results["torch"]["tokens_per_second"]
  # The step if every FLOP ran at JAX's own measured matmul peak: an upper bound on this trainer's
  # ratio that no change to the step's code (as opposed to its arithmetic) can pass.
  floor_seconds = config.flops_per_token(args.seq_len) * tokens_per_step / (peak["jax_gflops"] * 1e9)
  ceiling = results["torch"]["median"] / floor_seconds
  report = {
      "machine": {"cpu": cpu_name(), "cores": os.cpu_count(), "python": sys.version.split()[0],
                  "jax": jax.__version__, "torch": torch.__version__, "transformers": version("transformers"),
                  "load_average_start": load_start, "load_average_end": os.getloadavg()[0]},
      "shape": {**SHAPE, "parameters": config.num_params()}, "batch": args.batch, "seq_len": args.seq_len,
      "steps_per_round": args.steps, "repeats": args.repeats, "matmul_peak": peak, "results": results,
      "ratio": ratio, "ceiling_ratio": ceiling, "target": TARGET, "passed": ratio >= TARGET,
      "seconds": round(time.time() - started, 1),
      "date": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
  out = Path(args.out_dir)
  out.mkdir(parents=True, exist_ok=True)
  (out / "train_throughput.json").write_text(json.dumps(report, indent=2) + "\n")
  (out / "train_throughput.md").write_text(render(report))
  print(render(report))


def render(r: dict) -> str:
  m, res = r["machine"], r["results"]
  rows = "\n".join(
      f"| {label} | {res[key]['tokens_per_second']:,.0f} ({res[key]['best_tokens_per_second']:,.0f}) | "
      f"{res[key]['median']:.3f} | {res[key]['mfu']:.1%} | {res[key]['first_loss']:.4f} |"
      for key, label in (("ours", "this project (`trainer.make_train_step`, jitted)"),
                         ("torch", "`transformers` Qwen2 + torch AdamW")))
  verdict = "PASS" if r["passed"] else "**FAIL**"
  reach = ("so the target can only be passed by doing less arithmetic than `transformers` does, not by faster code"
           if r["ceiling_ratio"] < r["target"] else "so the target is within reach of faster code")
  return f"""# Training throughput benchmark

{r['date']} · {m['cpu']}, {m['cores']} cores · Python {m['python']} · jax {m['jax']}, torch {m['torch']}, \
transformers {m['transformers']} · 1-minute load average {m['load_average_start']:.2f} at the start, \
{m['load_average_end']:.2f} at the end · {r['seconds']:.0f} s in all

Model: Qwen2 shape, {r['shape']['parameters']:,} parameters (vocab {r['shape']['vocab_size']:,}, \
{r['shape']['num_layers']} layers, width {r['shape']['d_model']}, {r['shape']['num_heads']} query / \
{r['shape']['num_kv_heads']} key-value heads, MLP {r['shape']['mlp_dim']}, q/k/v biases, tied embeddings), float32, \
the same random weights on both sides. Batch {r['batch']} x {r['seq_len']} tokens; a step is forward, backward and \
AdamW. Medians of {r['repeats']} alternating rounds of {r['steps_per_round']} steps after a warm-up (best in brackets).

Matmul peak measured in the same run (float32 2048 x 2048): JAX {r['matmul_peak']['jax_gflops']:.0f} GFLOP/s, \
torch {r['matmul_peak']['torch_gflops']:.0f} GFLOP/s; MFU is against the larger.

| system | tokens/s | s/step | MFU | first loss |
|---|---:|---:|---:|---:|
{rows}

| target | measured | pass |
|---|---:|---|
| ≥ {r['target']}x the torch tokens per second | {r['ratio']:.2f}x | {verdict} |

Ceiling: were every FLOP of this step to run at JAX's measured matmul peak, with nothing else costing time, \
the step would take {r['results']['torch']['median'] / r['ceiling_ratio']:.3f} s, which is \
{r['ceiling_ratio']:.2f}x torch's; {reach}.
"""


if __name__ == "__main__":
  main()
