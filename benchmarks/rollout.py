"""Benchmark: generation speed of the KV-cache sampler and of the search rollout loop.

In one run, on one tiny-but-not-trivial Qwen2 shape (about 16.9M parameters: vocab
4,096, 4 layers, width 512, 8 query and 2 key/value heads, MLP 1,984, q/k/v biases,
tied embeddings, float32) with the SAME weights everywhere, measures:

  * generated tokens per second, prompt 128 and 128 new tokens (greedy, every row
    writes all 128: no stop fires), at batch 1 and batch 16, for
      - this project's `Sampler` (append the prompt, then `generate`);
      - Hugging Face `transformers` `generate` on torch CPU (the weights exported by
        `hf_io.export_hf` and loaded with `Qwen2ForCausalLM.from_pretrained`);
      - the vanilla `Sampler` of google-tunix (`tunix.generate.sampler`) on tunix's
        own Qwen2 (`tunix.models.qwen2`), loaded from the same safetensors. tunix
        cannot be installed next to this project's pins (it wants safetensors<0.8,
        transformers 5.23 wants >=0.8), so it lives in its own venv (`make
        bench-venv`, `.venv-bench`, requirements-benchmarks.txt: the same jax
        0.10.2 and flax 0.12.8) and runs in a worker process this script drives;
    each call is timed end to end (prefill included), and a 1-new-token call gives
    the prefill time, so (t128 - t1) / 127 is the time of one decode step;
  * a 4-turn search rollout (batch 16, the project's default `RolloutConfig`:
    capacity 2,048, prefill buckets 64/256/1,024): Search-R1 prompts of real
    questions, then per turn 64 new tokens per row (forced: a random model writes
    no tags) and, between turns, the top-3 search results of a real BM25 index
    (tantivy, the default world), tokenized with the default vocabulary. The same
    loop runs two ways on the same Sampler: appending only each observation to the
    rows' caches (this project), or resetting every row and prefilling its whole
    context before each turn (re-encoding, the Search-R1 way). Search time is
    inside both.

Greedy outputs of the three samplers are compared as a sanity check (they share
weights, so they agree up to float rounding). Rounds interleave the systems and
repeat; the tables show medians (and the best run). Writes
benchmarks/results/rollout.{json,md} and prints the markdown.

How to run (about 10 minutes on 2 cores):

  make bench-rollout          # builds .venv-bench for tunix first
  .venv/bin/python benchmarks/rollout.py [--repeats 5] [--no_tunix]
  .venv/bin/python benchmarks/rollout.py --dtype bfloat16   # all three in bfloat16: rollout-bfloat16.{json,md}
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import importlib.metadata
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

RESULTS = Path(__file__).parent / "results"
ROOT = Path(__file__).resolve().parent.parent
BENCH_PYTHON = ROOT / ".venv-bench" / "bin" / "python"

# The model shape (kept in plain ints so the tunix worker needs no project import).
SHAPE = dict(vocab_size=4096, num_layers=4, d_model=512, num_heads=8, num_kv_heads=2, mlp_dim=1984,
             qkv_bias=True, tie_embeddings=True, rope_theta=1_000_000.0, rms_norm_eps=1e-6)
# Out-of-vocabulary ids: pad for tunix (it masks pad tokens), and stops that never fire.
TUNIX_PAD = SHAPE["vocab_size"]
NEVER = [SHAPE["vocab_size"] + 1, SHAPE["vocab_size"] + 2, SHAPE["vocab_size"] + 3]


def log(message: str) -> None:
  print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------
# The tunix worker (runs in .venv-bench; imports nothing from this project).


def tunix_worker(hf_dir: str, dtype: str = "float32") -> None:
  """Serves timing requests on stdin/stdout, one JSON object per line."""
  import jax
  import jax.numpy as jnp
  from tunix.generate import sampler as tunix_sampler
  from tunix.models.qwen2 import model as qwen2_model
  from tunix.models.qwen2 import params as qwen2_params

  hf = json.loads((Path(hf_dir) / "config.json").read_text())
  config = qwen2_model.ModelConfig(
      num_layers=hf["num_hidden_layers"], vocab_size=hf["vocab_size"], embed_dim=hf["hidden_size"],
      hidden_dim=hf["intermediate_size"], num_heads=hf["num_attention_heads"],
      head_dim=hf["hidden_size"] // hf["num_attention_heads"], num_kv_heads=hf["num_key_value_heads"],
      rope_theta=int(hf["rope_theta"]), norm_eps=hf["rms_norm_eps"], use_tied_embedding=hf["tie_word_embeddings"],
      dtype=jnp.dtype(dtype), param_dtype=jnp.dtype(dtype))
  model = qwen2_params.create_model_from_safe_tensors(hf_dir, config, dtype=jnp.dtype(dtype))

  class Tokenizer:
    """Token ids written as space-separated text (tunix's Sampler takes strings)."""

    def encode(self, text, **_):
      return [int(t) for t in text.split()]

    def decode(self, ids, **_):
      return " ".join(str(int(i)) for i in ids)

    def bos_id(self):
      return 0  # Falsy: tunix then prepends nothing.

    def eos_id(self):
      return NEVER[2]

    def pad_id(self):
      return TUNIX_PAD

  samplers = {}
  print(json.dumps({"ready": True, "jax": jax.__version__,
                    "tunix": importlib.metadata.version("google-tunix"),
                    "flax": importlib.metadata.version("flax")}), flush=True)
  for line in sys.stdin:
    request = json.loads(line)
    if request.get("quit"):
      break
    prompts, new = request["prompts"], request["new_tokens"]
    cache_size = request["cache_size"]
    if cache_size not in samplers:
      samplers[cache_size] = tunix_sampler.Sampler(model, Tokenizer(), tunix_sampler.CacheConfig(
          cache_size=cache_size, num_layers=config.num_layers, num_kv_heads=config.num_kv_heads,
          head_dim=config.head_dim))
    texts = [" ".join(str(t) for t in p) for p in prompts]
    start = time.perf_counter()
    out = samplers[cache_size](texts, max_generation_steps=new, max_prompt_length=len(prompts[0]),
                               eos_tokens=[NEVER[2]], temperature=0.0)
    seconds = time.perf_counter() - start
    tokens = [np.asarray(t).tolist() for t in out.tokens]
    print(json.dumps({"seconds": seconds, "tokens": tokens}), flush=True)


class TunixClient:
  """Drives the tunix worker process."""

  def __init__(self, python: Path, hf_dir: Path, dtype: str):
    env = dict(os.environ, PYTHONPATH="")
    self.proc = subprocess.Popen([str(python), str(Path(__file__).resolve()), "--tunix_worker", str(hf_dir),
                                  "--dtype", dtype], stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, text=True, env=env, cwd=str(ROOT))
    self.info = self._read()

  def _read(self) -> dict:
    line = self.proc.stdout.readline()
    if not line:
      raise RuntimeError(f"tunix worker exited ({self.proc.wait()})")
    return json.loads(line)

  def run(self, prompts: np.ndarray, new_tokens: int) -> tuple[float, np.ndarray]:
    self.proc.stdin.write(json.dumps({"prompts": prompts.tolist(), "new_tokens": new_tokens,
                                      "cache_size": prompts.shape[1] + 128}) + "\n")
    self.proc.stdin.flush()
    reply = self._read()
    return reply["seconds"], np.asarray(reply["tokens"])

  def close(self) -> None:
    try:
      self.proc.stdin.write(json.dumps({"quit": True}) + "\n")
      self.proc.stdin.flush()
      self.proc.wait(timeout=60)
    except Exception:  # pylint: disable=broad-except
      self.proc.kill()


# --------------------------------------------------------------------------
# This project and torch.


def make_model(seed: int):
  import flax.linen as nn
  import jax
  import jax.numpy as jnp

  from masksearch_jax.models.transformer import Decoder, TransformerConfig
  config = TransformerConfig(**SHAPE)
  params = nn.unbox(Decoder(config).init(jax.random.PRNGKey(seed), jnp.zeros((1, 4), jnp.int32))["params"])
  return config, params


class OursRunner:
  """This project's Sampler, one per batch size, its state reused across calls (as a rollout does)."""

  def __init__(self, config, params, batch_size: int, prompt_len: int, new_tokens: int):
    from masksearch_jax.models.sampler import Sampler
    self.sampler = Sampler(config, params, batch_size=batch_size, capacity=prompt_len + new_tokens,
                           max_new_tokens=new_tokens, stop_sequences=[NEVER[:1], NEVER[1:2]], eos_id=NEVER[2],
                           pad_id=0, prefill_buckets=(prompt_len,))
    self.state = self.sampler.new_state()

  def run(self, prompts: np.ndarray, new_tokens: int) -> tuple[float, np.ndarray]:
    import jax
    sampler = self.sampler
    start = time.perf_counter()
    state = sampler.reset(self.state, np.ones((sampler.batch_size,), bool))
    state = sampler.append(state, list(prompts))
    state, result = sampler.generate(state, jax.random.PRNGKey(0), max_new_tokens=new_tokens)
    seconds = time.perf_counter() - start
    self.state = state
    assert (result.num_tokens == new_tokens).all(), result.num_tokens
    return seconds, result.tokens[:, :new_tokens]


class TorchRunner:
  """`transformers` `generate`, greedy, on torch CPU."""

  def __init__(self, hf_dir: Path, dtype: str):
    import torch
    import transformers
    self.torch = torch
    self.model = transformers.AutoModelForCausalLM.from_pretrained(str(hf_dir), dtype=getattr(torch, dtype)).eval()

  def run(self, prompts: np.ndarray, new_tokens: int) -> tuple[float, np.ndarray]:
    torch = self.torch
    ids = torch.as_tensor(prompts, dtype=torch.long)
    start = time.perf_counter()
    with torch.inference_mode():
      out = self.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=new_tokens,
                                do_sample=False, eos_token_id=None, pad_token_id=0, use_cache=True)
    seconds = time.perf_counter() - start
    out = out[:, prompts.shape[1]:].numpy()
    assert out.shape[1] == new_tokens, out.shape
    return seconds, out


def common_prefix(a: np.ndarray, b: np.ndarray) -> int:
  n = min(len(a), len(b))
  differ = np.flatnonzero(np.asarray(a[:n]) != np.asarray(b[:n]))
  return int(differ[0]) if len(differ) else n


# --------------------------------------------------------------------------
# The 4-turn rollout.


def rollout_setup(args, workdir: Path) -> dict:
  """Prompts, and for every row and turn the observation tokens from real searches (the same for both loops)."""
  from masksearch_jax.agent import protocol
  from masksearch_jax.agent.rollout import RolloutConfig, observation_text
  from masksearch_jax.data import vocabularies, world_io
  from masksearch_jax.data.trajectories import ContextEncoder
  from masksearch_jax.data.world import WorldConfig
  from masksearch_jax.data.world_types import RELATIONS
  from masksearch_jax.retrieval.tantivy_index import TantivyRetriever, build_index

  world_config = WorldConfig(seed=0, size=4000)
  vocab = vocabularies.world_vocabulary(world_config)
  world = world_io.load_world(world_io.cached_world_dir(world_config, progress=False))
  build_index(world.passages, workdir / "index")
  retriever = TantivyRetriever(workdir / "index")
  encoder = ContextEncoder(vocab)
  cfg = RolloutConfig()
  rng = np.random.RandomState(0)
  questions = [world.questions[i] for i in rng.choice(len(world.questions), args.rollout_batch, replace=False)]
  prompts = [[cfg.bos_id, *encoder.encode(protocol.qa_prompt(q.question), start_of_sequence=True)]
             for q in questions]
  facts = [world.facts[i] for i in rng.choice(len(world.facts), args.rollout_batch * args.turns, replace=False)]
  # Turn 1 searches the question; later turns look up a fact (what the agent would ask next).
  queries = [[q.question] + [f"{world.entities[f.subject].name} {RELATIONS[f.relation][0]}"
                             for f in facts[b * args.turns:(b + 1) * args.turns]][:args.turns - 1]
             for b, q in enumerate(questions)]
  close = encoder.encode(f"{protocol.INFORMATION[1]}\n\n")

  def observe(texts: Sequence[str]) -> list[list[int]]:
    out = []
    for text in texts:
      ids = encoder.encode(text)
      if len(ids) > cfg.max_observation_tokens:
        ids = ids[:cfg.max_observation_tokens - len(close)] + close
      out.append(ids)
    return out

  def search(turn: int) -> list[list[int]]:
    hits = retriever.batch_search([queries[b][turn] for b in range(args.rollout_batch)], top_k=cfg.top_k)
    return observe([observation_text(h) for h in hits])

  observations = [search(t) for t in range(args.turns - 1)]
  return dict(cfg=cfg, prompts=prompts, search=search, vocab=vocab,
              prompt_lengths=[len(p) for p in prompts],
              observation_lengths=[[len(o) for o in obs] for obs in observations])


def run_rollout(sampler, state, setup: dict, turns: int, turn_tokens: int, reencode: bool) -> tuple[Any, float, dict]:
  """One episode of `turns` turns per row; returns the sampler state, the seconds and what was written."""
  import jax
  batch = sampler.batch_size
  rows = np.ones((batch,), bool)
  start = time.perf_counter()
  state = sampler.reset(state, rows)
  contexts = [list(p) for p in setup["prompts"]]
  state = sampler.append(state, contexts)
  rng = jax.random.PRNGKey(0)
  generated, prefilled = [], sum(len(c) for c in contexts)
  for turn in range(turns):
    rng, key = jax.random.split(rng)
    state, result = sampler.generate(state, key, sampling=setup["cfg"].sampling, max_new_tokens=turn_tokens)
    tokens = [result.row_tokens(b).tolist() for b in range(batch)]
    generated.append(tokens)
    if turn == turns - 1:
      break
    observations = setup["search"](turn)
    for b in range(batch):
      contexts[b] += tokens[b] + observations[b]
    if reencode:
      state = sampler.reset(state, rows)
      state = sampler.append(state, contexts)
      prefilled += sum(len(c) for c in contexts)
    else:
      state = sampler.append(state, observations)
      prefilled += sum(len(o) for o in observations)
  seconds = time.perf_counter() - start
  return state, seconds, dict(generated=generated, prefilled=prefilled,
                       final_lengths=[len(c) + len(generated[-1][b]) for b, c in enumerate(contexts)])


# --------------------------------------------------------------------------
# Reporting helpers.


def summarize(times: Sequence[float]) -> dict:
  return {"median": statistics.median(times), "best": min(times), "runs": [round(t, 4) for t in times]}


def version(name: str) -> str:
  try:
    return importlib.metadata.version(name)
  except importlib.metadata.PackageNotFoundError:
    return "-"


def cpu_name() -> str:
  try:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
      if line.startswith("model name"):
        return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or platform.machine()


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--repeats", type=int, default=5, help="Timed rounds (after one warm-up round).")
  parser.add_argument("--rollout_repeats", type=int, default=2)
  parser.add_argument("--prompt_len", type=int, default=128)
  parser.add_argument("--new_tokens", type=int, default=128)
  parser.add_argument("--batches", default="1,16")
  parser.add_argument("--rollout_batch", type=int, default=16)
  parser.add_argument("--turns", type=int, default=4)
  parser.add_argument("--turn_tokens", type=int, default=64)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--no_tunix", action="store_true", help="Skip tunix (no .venv-bench).")
  parser.add_argument("--no_rollout", action="store_true")
  parser.add_argument("--bench_python", default=str(BENCH_PYTHON), help="Python of the tunix venv.")
  parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32",
                      help="Compute dtype of all three systems (bfloat16: weights and caches too; results go to "
                           "rollout-bfloat16.{json,md}).")
  parser.add_argument("--out_dir", default=str(RESULTS))
  parser.add_argument("--tunix_worker", metavar="HF_DIR", help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.tunix_worker:
    tunix_worker(args.tunix_worker, args.dtype)
    return

  import jax
  import jax.numpy as jnp

  from masksearch_jax.models import hf_io
  from masksearch_jax.models.sampler import Sampler
  from masksearch_jax.models.transformer import Decoder

  started = time.time()
  load_start = os.getloadavg()[0]
  workdir = Path(tempfile.mkdtemp(prefix="bench-rollout-"))
  config, params = make_model(args.seed)
  log(f"model: {config.num_params():,} parameters")
  hf_dir = hf_io.export_hf(params, config, workdir / "hf", model_type="qwen2")
  # bfloat16: our Sampler casts the float32 weights once before its loop; torch and tunix load them as bfloat16.
  config = dataclasses.replace(config, dtype=args.dtype)
  batches = [int(b) for b in args.batches.split(",")]
  rs = np.random.RandomState(args.seed)
  prompts = {b: rs.randint(3, config.vocab_size, size=(b, args.prompt_len)).astype(np.int32) for b in batches}

  systems: dict[str, Callable[[int], Any]] = {}
  ours = {b: OursRunner(config, params, b, args.prompt_len, args.new_tokens) for b in batches}
  systems["ours"] = lambda b, n: ours[b].run(prompts[b], n)
  log("loading the torch model")
  torch_runner = TorchRunner(hf_dir, args.dtype)
  systems["torch"] = lambda b, n: torch_runner.run(prompts[b], n)
  tunix = None
  if not args.no_tunix:
    if not Path(args.bench_python).exists():
      raise SystemExit(f"{args.bench_python} is missing: run `make bench-venv` (or pass --no_tunix)")
    log("starting the tunix worker")
    tunix = TunixClient(Path(args.bench_python), hf_dir, args.dtype)
    systems["tunix"] = lambda b, n: tunix.run(prompts[b], n)

  # Sanity: the same weights give the same first logits (ours vs torch), and greedy outputs agree.
  import torch
  first_ours = np.asarray(Decoder(config).apply({"params": params}, jnp.asarray(prompts[batches[0]][:1]))[0, -1])
  with torch.inference_mode():
    first_torch = torch_runner.model(torch.as_tensor(prompts[batches[0]][:1], dtype=torch.long)).logits[0, -1]
  logit_diff = float(np.abs(first_ours - first_torch.float().numpy()).max())
  log(f"first-step logits, ours vs torch: max abs difference {logit_diff:.2e}")

  # Timing rounds: round 0 warms up (compiles); the order of systems rotates each round.
  names = list(systems)
  times = {(s, b, n): [] for s in names for b in batches for n in (1, args.new_tokens)}
  outputs = {}
  for rnd in range(args.repeats + 1):
    order = names[rnd % len(names):] + names[:rnd % len(names)]
    for b in batches:
      for s in order:
        for n in (args.new_tokens, 1):
          seconds, tokens = systems[s](b, n)
          if rnd:
            times[(s, b, n)].append(seconds)
          elif n == args.new_tokens:
            outputs[(s, b)] = tokens
    log(f"round {rnd}/{args.repeats}: " + ", ".join(
        f"{s} b{b} {times[(s, b, args.new_tokens)][-1]:.2f}s" for s in names for b in batches) if rnd else
        "warm-up round done")
  agreement = {}
  for s in names:
    if s == "ours":
      continue
    for b in batches:
      prefixes = [common_prefix(outputs[("ours", b)][r], outputs[(s, b)][r]) for r in range(b)]
      agreement[f"{s} b{b}"] = {"rows_identical": sum(p == args.new_tokens for p in prefixes), "rows": b,
                                "min_common_prefix": min(prefixes),
                                "median_common_prefix": float(np.median(prefixes))}
  log(f"greedy agreement with ours: {agreement}")

  generation = []
  for s in names:
    for b in batches:
      full, one = times[(s, b, args.new_tokens)], times[(s, b, 1)]
      med_full, med_one = statistics.median(full), statistics.median(one)
      generation.append({
          "system": s, "batch": b, "tokens_per_second": b * args.new_tokens / med_full,
          "tokens_per_second_best": b * args.new_tokens / min(full),
          "seconds": summarize(full), "prefill_seconds": summarize(one),
          "decode_ms_per_step": (med_full - med_one) / (args.new_tokens - 1) * 1e3})
  rate = {(g["system"], g["batch"]): g["tokens_per_second"] for g in generation}

  # The rollout.
  rollout = None
  if not args.no_rollout:
    log("rollout: building the index and the observations")
    setup = rollout_setup(args, workdir)
    cfg = setup["cfg"]
    rsampler = Sampler(config, params, batch_size=args.rollout_batch, capacity=cfg.max_length,
                       max_new_tokens=cfg.max_turn_tokens, stop_sequences=[NEVER[:1], NEVER[1:2]], eos_id=NEVER[2],
                       pad_id=0, prefill_buckets=cfg.prefill_buckets)
    rtimes = {"incremental": [], "reencode": []}
    info = {}
    rstate = rsampler.new_state()
    for rnd in range(args.rollout_repeats + 1):
      for mode in (["incremental", "reencode"] if rnd % 2 == 0 else ["reencode", "incremental"]):
        rstate, seconds, what = run_rollout(rsampler, rstate, setup, args.turns, args.turn_tokens, reencode=mode == "reencode")
        if rnd:
          rtimes[mode].append(seconds)
        info[mode] = what
      if rnd:
        log(f"rollout round {rnd}/{args.rollout_repeats}: incremental {rtimes['incremental'][-1]:.2f}s, "
            f"re-encoding {rtimes['reencode'][-1]:.2f}s")
    same = sum(info["incremental"]["generated"][t][b] == info["reencode"]["generated"][t][b]
               for t in range(args.turns) for b in range(args.rollout_batch))
    generated = args.rollout_batch * args.turns * args.turn_tokens
    rollout = {
        "batch": args.rollout_batch, "turns": args.turns, "turn_tokens": args.turn_tokens,
        "capacity": cfg.max_length, "prefill_buckets": list(cfg.prefill_buckets), "top_k": cfg.top_k,
        "sampling": {"temperature": cfg.temperature, "top_k": cfg.top_k_sampling, "top_p": cfg.top_p},
        "prompt_tokens": {"min": min(setup["prompt_lengths"]), "max": max(setup["prompt_lengths"]),
                          "mean": float(np.mean(setup["prompt_lengths"]))},
        "observation_tokens": {"min": int(np.min(setup["observation_lengths"])),
                               "max": int(np.max(setup["observation_lengths"])),
                               "mean": float(np.mean(setup["observation_lengths"]))},
        "final_context_tokens": {"min": min(info["incremental"]["final_lengths"]),
                                 "max": max(info["incremental"]["final_lengths"])},
        "generated_tokens": generated,
        "prefilled_tokens": {m: info[m]["prefilled"] for m in info},
        "turns_identical": same, "turns_total": args.turns * args.rollout_batch,
        "seconds": {m: summarize(t) for m, t in rtimes.items()},
        "tokens_per_second": {m: generated / statistics.median(t) for m, t in rtimes.items()},
    }
  if tunix is not None:
    tunix.close()

  # Targets.
  big = max(batches)
  targets = []

  def target(tid, text, measured, goal):
    targets.append({"id": tid, "target": text, "measured": measured, "goal": goal,
                    "pass": measured is not None and measured >= goal})
  target("generate", f"≥ 3x `transformers` `generate` at batch {big}",
         rate[("ours", big)] / rate[("torch", big)], 3.0)
  if tunix is not None:
    target("tunix", f"≥ 1.5x tunix's `Sampler` at batch {big}", rate[("ours", big)] / rate[("tunix", big)], 1.5)
  if rollout is not None:
    target("reencode", f"{args.turns}-turn rollout ≥ 2x the re-encoding loop",
           rollout["tokens_per_second"]["incremental"] / rollout["tokens_per_second"]["reencode"], 2.0)

  report = {
      "benchmark": "rollout", "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
      "machine": {"cpu": cpu_name(), "cores": os.cpu_count(), "python": platform.python_version(),
                  "load_average_start": load_start, "load_average_end": os.getloadavg()[0]},
      "versions": {"jax": jax.__version__, "flax": version("flax"), "torch": version("torch"),
                   "transformers": version("transformers"),
                   "tunix": tunix.info if tunix is not None else None},
      "model": dict(SHAPE, parameters=config.num_params(), dtype=args.dtype),
      "prompt_len": args.prompt_len, "new_tokens": args.new_tokens, "repeats": args.repeats,
      "sanity": {"first_logits_max_abs_diff_vs_torch": logit_diff, "greedy_agreement": agreement},
      "generation": generation, "rollout": rollout, "targets": targets,
      "seconds": round(time.time() - started, 1),
  }
  out_dir = Path(args.out_dir)
  out_dir.mkdir(parents=True, exist_ok=True)
  stem = "rollout" if args.dtype == "float32" else f"rollout-{args.dtype}"
  (out_dir / f"{stem}.json").write_text(json.dumps(report, indent=2) + "\n")
  markdown = render(report)
  (out_dir / f"{stem}.md").write_text(markdown)
  print(markdown)
  met = [t["id"] for t in targets if t["pass"]]
  missed = [t["id"] for t in targets if not t["pass"]]
  print(f"SUMMARY: targets met: {', '.join(met) or 'none'}; missed: {', '.join(missed) or 'none'}")


SYSTEM_NAMES = {"ours": "this project (`Sampler`)", "torch": "`transformers` `generate` (torch CPU)",
                "tunix": "tunix `Sampler` (vanilla)"}


def render(report: dict) -> str:
  m, mach = report["model"], report["machine"]
  v = report["versions"]
  tunix = v["tunix"]
  lines = [
      "# Rollout benchmark", "",
      f"{report['date']} · {mach['cpu']}, {mach['cores']} cores · Python {mach['python']} · jax {v['jax']}, "
      f"flax {v['flax']}, torch {v['torch']}, transformers {v['transformers']}"
      + (f", tunix {tunix['tunix']} (jax {tunix['jax']}, flax {tunix['flax']}, own venv)" if tunix else "")
      + f" · 1-minute load average {mach['load_average_start']:.2f} at the start, "
      f"{mach['load_average_end']:.2f} at the end · {report['seconds']:.0f} s in all", "",
      f"Model: Qwen2 shape, {m['parameters']:,} parameters (vocab {m['vocab_size']:,}, {m['num_layers']} layers, "
      f"width {m['d_model']}, {m['num_heads']} query / {m['num_kv_heads']} key-value heads, MLP {m['mlp_dim']}, "
      f"q/k/v biases, tied embeddings), {m['dtype']}, random weights shared by all three (exported with `hf_io`). "
      f"Prompt {report['prompt_len']} tokens, {report['new_tokens']} new tokens per row, greedy, no stop fires. "
      f"Medians of {report['repeats']} interleaved rounds after a warm-up (best in brackets); a call is timed end "
      f"to end, prefill included.", "",
      "## Generation", "",
      "| system | batch | tokens/s | call (s) | prefill: 1-token call (s) | decode step (ms) |",
      "|---|---:|---:|---:|---:|---:|"]
  for g in report["generation"]:
    lines.append(f"| {SYSTEM_NAMES[g['system']]} | {g['batch']} | {g['tokens_per_second']:,.0f} "
                 f"({g['tokens_per_second_best']:,.0f}) | {g['seconds']['median']:.3f} | "
                 f"{g['prefill_seconds']['median']:.3f} | {g['decode_ms_per_step']:.1f} |")
  rate = {(g["system"], g["batch"]): g["tokens_per_second"] for g in report["generation"]}
  ratios = [f"{SYSTEM_NAMES['ours']} / {SYSTEM_NAMES[s]} at batch {b}: {rate[('ours', b)] / rate[(s, b)]:.2f}x"
            for (s, b) in rate if s != "ours"]
  lines += ["", "Ratios: " + "; ".join(ratios) + ".", ""]
  sanity = report["sanity"]
  lines.append(f"Sanity: the first-step logits of this project and torch differ by at most "
               f"{sanity['first_logits_max_abs_diff_vs_torch']:.1e}; greedy outputs identical to ours: " + ", ".join(
                   f"{k} {a['rows_identical']}/{a['rows']} rows (shortest common prefix {a['min_common_prefix']})"
                   for k, a in sanity["greedy_agreement"].items()) + ".")
  r = report["rollout"]
  if r:
    lines += [
        "", f"## {r['turns']}-turn search rollout", "",
        f"Batch {r['batch']}, the default `RolloutConfig` (capacity {r['capacity']:,}, prefill buckets "
        f"{'/'.join(str(x) for x in r['prefill_buckets'])}, top {r['top_k']} passages, sampling at temperature "
        f"{r['sampling']['temperature']}). Per row: a Search-R1 prompt of {r['prompt_tokens']['min']}–"
        f"{r['prompt_tokens']['max']} tokens, then {r['turns']} turns of exactly {r['turn_tokens']} new tokens, "
        f"with {r['turns'] - 1} observations of {r['observation_tokens']['min']}–{r['observation_tokens']['max']} "
        f"tokens (mean {r['observation_tokens']['mean']:.0f}) between them: real BM25 results for the question, "
        f"then for fact look-ups; contexts end at {r['final_context_tokens']['min']}–"
        f"{r['final_context_tokens']['max']} tokens. Both loops use one `Sampler` and the same searches (timed "
        f"inside); the re-encoding loop resets each row and prefills its whole context before every turn. "
        f"Medians of {len(r['seconds']['incremental']['runs'])} rounds (best in brackets).", "",
        "| loop | tokens prefilled | seconds | generated tokens/s |", "|---|---:|---:|---:|"]
    for mode, name in (("incremental", "this project: append the observation to the cache"),
                       ("reencode", "re-encode the whole context every turn (Search-R1)")):
      s = r["seconds"][mode]
      lines.append(f"| {name} | {r['prefilled_tokens'][mode]:,} | {s['median']:.2f} ({s['best']:.2f}) | "
                   f"{r['tokens_per_second'][mode]:,.0f} |")
    lines += ["", f"Turns whose sampled tokens are identical in both loops: {r['turns_identical']}/{r['turns_total']} "
              "(same seeds; they differ only where float rounding of a different prefill path flips a sample)."]
  lines += ["", "## Targets", "", "| target | measured | pass |", "|---|---:|---|"]
  for t in report["targets"]:
    lines.append(f"| {t['target']} | {t['measured']:.2f}x | {'PASS' if t['pass'] else '**FAIL**'} |")
  lines += ["", "## Notes", "", *NOTES]
  return "\n".join(lines) + "\n"


NOTES = [
    "- Decode design: every layer's keys and values live in their own buffer, written in place by a scatter of "
    "the new tokens and read as they lie (heads first); the stacked layer weights are split (and with bfloat16 "
    "cast) once outside the `while_loop`, and attention reads only the window of the cache the rows have reached.",
    "- A batch-16 call of ours or tunix is a quarter to a third prefill (128 prompt tokens per row), which keeps "
    "call-level ratios apart from decode-step ratios; a decode step at batch 16 reads every weight once, "
    "about 67 MB in float32 and half that in bfloat16, and that read is most of the step on 2 cores.",
    "- With bfloat16 the greedy outputs of the three systems part after a few tokens: their roundings differ "
    "(the first logits already differ by about 3e-2), so only the float32 run checks agreement token by token.",
    "- At batch 1 in bfloat16 ours is slower than in float32: a [1, 512] x [512, n] product is not one XLA:CPU "
    "runs on its fast bfloat16 kernels (matrix-vector shapes are left to its own code generator).",
    "- The rollout is prefill-bound (16 rows, contexts of about 1,000-1,700 tokens, observations of up to 500); "
    "its ratio grows with the number of turns and the observation length, and falls with more tokens per turn.",
    "- Timings are noisy on 2 cores; torch's OpenMP threads suffer most when the machine is oversubscribed, so "
    "compare the load averages above.",
]


if __name__ == "__main__":
  main()
