"""Training tokens per second: this project's trainer step against `transformers` + torch on CPU.

One process, one model shape (the Qwen2 shape of benchmarks/rollout.py, about 17M parameters),
the same random weights (exported to `transformers` with `hf_io`), the same batch and sequence
length, and a full step on both sides: forward, backward and an AdamW update. Ours is
`trainer.make_train_step` (the step `masksearch train` jits: loss with loss weights and z-loss,
normalised by the weighted tokens), on the default partitioner's single device; torch's is
`Qwen2ForCausalLM(labels=...)`, `loss.backward()` and `torch.optim.AdamW`. Each side runs in
float32 and with bfloat16 compute (ours: `TransformerConfig.dtype = 'bfloat16'`, the way the
run files set it; torch: `torch.autocast('cpu', torch.bfloat16)`), parameters and optimizer state
in float32 on both. Rounds alternate between the four; medians and bests of the timed rounds after
a warm-up are reported. Issue 4's target compares this trainer as users run it, with bfloat16
compute, against torch's default float32 step; every other pairing is in the table too.

The same run measures this machine's matmul peaks (2048 x 2048 products in JAX and in torch, in
float32 and bfloat16 with float32 accumulation) and each step's estimated model FLOP utilisation
against the peak of its dtype (`TransformerConfig.flops_per_token`: 6 FLOPs per weight per token
plus the causal attention scores).

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
  """GFLOP/s of [size, size] x [size, size] products in JAX and torch, float32 and bfloat16 (best of `repeats`).

  bfloat16 products accumulate in float32 on both sides, as the training steps' do.
  """
  import jax
  import jax.numpy as jnp
  import torch
  flops = 2 * size ** 3
  peaks = {}
  for name, dtype in (("float32", jnp.float32), ("bfloat16", jnp.bfloat16)):
    a = jax.random.normal(jax.random.PRNGKey(0), (size, size), dtype)
    dot = jax.jit(lambda x, y: jnp.dot(x, y, preferred_element_type=jnp.float32))
    dot(a, a).block_until_ready()
    best = min(_timed(lambda: dot(a, a).block_until_ready()) for _ in range(repeats))
    peaks[f"jax_{name}_gflops"] = flops / best / 1e9
    t = torch.randn(size, size, dtype=getattr(torch, name))
    torch.mm(t, t)
    peaks[f"torch_{name}_gflops"] = flops / min(_timed(lambda: torch.mm(t, t)) for _ in range(repeats)) / 1e9
  return peaks


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

  def __init__(self, hf_dir: Path, tokens: np.ndarray, bfloat16: bool = False):
    import torch
    import transformers
    self.torch = torch
    self.bfloat16 = bfloat16
    self.model = transformers.AutoModelForCausalLM.from_pretrained(str(hf_dir), dtype=torch.float32).train()
    self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=1e-4)
    self.input_ids = torch.as_tensor(tokens[:, :-1], dtype=torch.long)
    self.labels = torch.as_tensor(tokens[:, :-1], dtype=torch.long)  # Shifted inside the model.

  def __call__(self) -> float:
    with self.torch.autocast("cpu", dtype=self.torch.bfloat16, enabled=self.bfloat16):
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
  # The parameters are donated to the first step, so each of our systems gets its own copy.
  copy = lambda: jax.tree_util.tree_map(np.array, params)
  systems = {"ours": OursStep(config, copy(), tokens),
             "ours_bf16": OursStep(dataclasses.replace(config, dtype="bfloat16"), copy(), tokens),
             "torch": TorchStep(hf_dir, tokens), "torch_bf16": TorchStep(hf_dir, tokens, bfloat16=True)}
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
  tokens_per_step = args.batch * args.seq_len
  step_flops = config.flops_per_token(args.seq_len) * tokens_per_step
  results = {}
  for name, values in times.items():
    dtype = "bfloat16" if name.endswith("bf16") else "float32"
    peak_flops = max(peak[f"jax_{dtype}_gflops"], peak[f"torch_{dtype}_gflops"]) * 1e9
    stats = summarize(values)
    results[name] = {**stats, "dtype": dtype, "tokens_per_second": tokens_per_step / stats["median"],
                     "best_tokens_per_second": tokens_per_step / stats["best"],
                     "mfu": step_flops / stats["median"] / peak_flops, "first_loss": first_loss[name]}
  speed = {name: r["tokens_per_second"] for name, r in results.items()}
  ratios = {"ours_bf16/torch": speed["ours_bf16"] / speed["torch"], "ours/torch": speed["ours"] / speed["torch"],
            "ours_bf16/torch_bf16": speed["ours_bf16"] / speed["torch_bf16"]}
  ratio = ratios["ours_bf16/torch"]
  # Each step if every FLOP ran at JAX's own measured matmul peak for its dtype: an upper bound on
  # this trainer's ratio that no change to the step's code (as opposed to its arithmetic) can pass.
  ceilings = {name: results["torch"]["median"] / (step_flops / (peak[f"jax_{dtype}_gflops"] * 1e9))
              for name, dtype in (("ours", "float32"), ("ours_bf16", "bfloat16"))}
  report = {
      "machine": {"cpu": cpu_name(), "cores": os.cpu_count(), "python": sys.version.split()[0],
                  "jax": jax.__version__, "torch": torch.__version__, "transformers": version("transformers"),
                  "load_average_start": load_start, "load_average_end": os.getloadavg()[0]},
      "shape": {**SHAPE, "parameters": config.num_params()}, "batch": args.batch, "seq_len": args.seq_len,
      "steps_per_round": args.steps, "repeats": args.repeats, "matmul_peak": peak, "results": results,
      "ratio": ratio, "ratios": ratios, "ceiling_ratios": ceilings, "target": TARGET, "passed": ratio >= TARGET,
      "seconds": round(time.time() - started, 1),
      "date": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
  out = Path(args.out_dir)
  out.mkdir(parents=True, exist_ok=True)
  (out / "train_throughput.json").write_text(json.dumps(report, indent=2) + "\n")
  (out / "train_throughput.md").write_text(render(report))
  print(render(report))


def render(r: dict) -> str:
  m, res, peak = r["machine"], r["results"], r["matmul_peak"]
  labels = (("ours", "this project (`trainer.make_train_step`, jitted), float32"),
            ("ours_bf16", "this project, bfloat16 compute"),
            ("torch", "`transformers` Qwen2 + torch AdamW, float32"),
            ("torch_bf16", "`transformers` Qwen2 + torch AdamW, bfloat16 autocast"))
  rows = "\n".join(
      f"| {label} | {res[key]['tokens_per_second']:,.0f} ({res[key]['best_tokens_per_second']:,.0f}) | "
      f"{res[key]['median']:.3f} | {res[key]['mfu']:.1%} | {res[key]['first_loss']:.4f} |" for key, label in labels)
  verdict = "PASS" if r["passed"] else "**FAIL**"
  ratios = r["ratios"]
  ceiling = r["ceiling_ratios"]["ours_bf16"]
  reach = ("so the target can only be passed by doing less arithmetic than `transformers` does, not by faster code"
           if ceiling < r["target"] else "so the target is within reach of faster code")
  return f"""# Training throughput benchmark

{r['date']} · {m['cpu']}, {m['cores']} cores · Python {m['python']} · jax {m['jax']}, torch {m['torch']}, \
transformers {m['transformers']} · 1-minute load average {m['load_average_start']:.2f} at the start, \
{m['load_average_end']:.2f} at the end · {r['seconds']:.0f} s in all

Model: Qwen2 shape, {r['shape']['parameters']:,} parameters (vocab {r['shape']['vocab_size']:,}, \
{r['shape']['num_layers']} layers, width {r['shape']['d_model']}, {r['shape']['num_heads']} query / \
{r['shape']['num_kv_heads']} key-value heads, MLP {r['shape']['mlp_dim']}, q/k/v biases, tied embeddings), \
the same random weights on both sides, parameters and AdamW state in float32. Batch {r['batch']} x {r['seq_len']} \
tokens; a step is forward, backward and AdamW. Medians of {r['repeats']} alternating rounds of \
{r['steps_per_round']} steps after a warm-up (best in brackets).

Matmul peaks measured in the same run (2048 x 2048; bfloat16 accumulates in float32): JAX \
{peak['jax_float32_gflops']:.0f} GFLOP/s float32 and {peak['jax_bfloat16_gflops']:.0f} bfloat16; torch \
{peak['torch_float32_gflops']:.0f} and {peak['torch_bfloat16_gflops']:.0f}. MFU is against the larger peak of the \
step's dtype.

| system | tokens/s | s/step | MFU | first loss |
|---|---:|---:|---:|---:|
{rows}

| target | measured | pass |
|---|---:|---|
| ≥ {r['target']}x the torch tokens per second (ours with bfloat16 compute against torch's float32 step) | \
{ratios['ours_bf16/torch']:.2f}x | {verdict} |

Other pairings: ours float32 against torch float32 {ratios['ours/torch']:.2f}x; ours bfloat16 against torch \
bfloat16 autocast {ratios['ours_bf16/torch_bf16']:.2f}x.

Ceiling: were every FLOP of our bfloat16 step to run at JAX's measured bfloat16 matmul peak, with nothing \
else costing time, it would be {ceiling:.2f}x torch's float32 step (float32: \
{r['ceiling_ratios']['ours']:.2f}x); {reach}.
"""


if __name__ == "__main__":
  main()
