"""How fast a fresh policy learns to copy names from its context, on the table's own trajectories.

The miniature table's trained rows fail because the policy does not copy the question's entity into
its thinking and queries (README, "The paper in miniature"). This probe measures that skill directly:
it trains a fresh model (gin/models/tiny.gin unless --gin_file) with the trainer's own step on the
first ROW_LENGTH tokens of SFT trajectories (prompt and response, loss on the model's tokens, as
SFT does), and reports on held-out trajectories the teacher-forced accuracy on all model tokens and
on name continuations: every syllable after the first of a name word the model writes. Names are
unique runs of syllables, so once the first syllable is chosen the rest is a copy of a name in the
context. Name continuations are also split by what a one-token induction head would find for them
(`induction_kinds`): the previous syllable always followed by this one earlier in the row (unique),
followed by others too (ambiguous: only a longer match copies it), or never followed by it (absent).

  .venv/bin/python tools/copy_probe.py --data_dir artifacts/mini_table/data --steps 600

Prints one line per evaluation and, with --json, writes them to a file.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

import numpy as np

_SYLLABLE = re.compile(r"[a-z]{2}")
_NAME_PIECE = re.compile(r"▁?[A-Z][a-z]|[a-z]{2}")


def _name_continuations(pieces: list[str], weights: list[int]) -> list[int]:
  """1 where a model-written piece is a lower-case syllable following another syllable piece."""
  return [int(bool(w and j and _SYLLABLE.fullmatch(p) and _NAME_PIECE.fullmatch(pieces[j - 1])))
          for j, (p, w) in enumerate(zip(pieces, weights))]


# How a name continuation stands for a one-token induction head (find the earlier occurrences of the
# previous token, copy what followed): the kinds `induction_kinds` tells apart.
INDUCTION_KINDS = ("unique", "ambiguous", "absent")


def induction_kinds(tokens: list[int], flags: list[int]) -> list[int]:
  """Per token: 0 if not a name continuation, else 1 + its index in `INDUCTION_KINDS`: every earlier
  occurrence of the previous token was followed by this token (unique), some were followed by
  others too (ambiguous), or none was (absent: a longer match is needed, or it is no copy)."""
  following: dict[int, set[int]] = {}
  kinds = []
  for j, (token, flag) in enumerate(zip(tokens, flags)):
    if flag:
      seen = following.get(tokens[j - 1], set())
      kinds.append(3 if token not in seen else 1 if len(seen) == 1 else 2)
    else:
      kinds.append(0)
    if j:
      following.setdefault(tokens[j - 1], set()).add(token)
  return kinds


def load_rows(path: Path, vocabulary, row_length: int, limit: int) -> dict[str, np.ndarray]:
  """Token ids, loss weights and name-continuation flags of the first `limit` trajectories, cut or padded."""
  from masksearch_jax.data import trajectories
  ids, weights, names, kinds = [], [], [], []
  for n, trajectory in enumerate(trajectories.read_trajectories(path)):
    if n >= limit:
      break
    features = trajectories.trajectory_features(trajectory, vocabulary)
    tokens = list(features["inputs"]) + list(features["targets"])
    w = [0] * len(features["inputs"]) + list(features["targets_loss_weights"])
    pieces = [vocabulary.tokenizer.id_to_piece(int(t)) for t in tokens]
    flags = _name_continuations(pieces, w)
    pad = max(0, row_length - len(tokens))
    ids.append((tokens + [0] * pad)[:row_length])
    weights.append((w + [0] * pad)[:row_length])
    names.append((flags + [0] * pad)[:row_length])
    kinds.append((induction_kinds(tokens, flags) + [0] * pad)[:row_length])
  if len(ids) < 2:
    raise SystemExit(f"{path}: need at least 2 trajectories, found {len(ids)}")
  return {"ids": np.asarray(ids, np.int32), "weights": np.asarray(weights, np.float32),
          "names": np.asarray(names, np.float32), "kinds": np.asarray(kinds, np.int8)}


def _batch(ids: np.ndarray, weights: np.ndarray) -> dict[str, np.ndarray]:
  inputs = np.concatenate([np.zeros((len(ids), 1), np.int32), ids[:, :-1]], axis=1)
  return {"decoder_target_tokens": ids, "decoder_input_tokens": inputs, "decoder_loss_weights": weights}


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--data_dir", required=True, help="A table or quickstart data dir (vocabulary/, trajectories/).")
  parser.add_argument("--trajectories", default="qa-train.jsonl", help="File under DATA_DIR/trajectories/.")
  parser.add_argument("--gin_file", default="models/tiny.gin", help="The model's Gin file.")
  parser.add_argument("--row_length", type=int, default=512)
  parser.add_argument("--batch_size", type=int, default=16)
  parser.add_argument("--steps", type=int, default=600)
  parser.add_argument("--learning_rate", type=float, default=3e-3)
  parser.add_argument("--trajectories_limit", type=int, default=6000)
  parser.add_argument("--held_out", type=int, default=64, help="Trajectories kept out of training and evaluated.")
  parser.add_argument("--evaluations", type=int, default=6)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--json", help="Write the evaluations here.")
  parser.add_argument("--save_params", help="Write the trained parameters here (flax msgpack), for closer study.")
  args = parser.parse_args(argv)

  import gin
  import jax
  import jax.numpy as jnp
  import optax
  import seqio
  from flax import linen as nn

  from masksearch_jax import gin_flags
  from masksearch_jax.models.transformer import Decoder, TransformerConfig
  from masksearch_jax.training import trainer

  gin_flags.parse(gin_files=[args.gin_file], bindings=[])
  config = gin.get_configurable(TransformerConfig)()
  gin.clear_config()
  data_dir = Path(args.data_dir)
  vocabulary = seqio.SentencePieceVocabulary(str(data_dir / "vocabulary" / "spm.model"))
  rows = load_rows(data_dir / "trajectories" / args.trajectories, vocabulary, args.row_length,
                   args.trajectories_limit)
  held = slice(0, args.held_out)
  train = np.arange(args.held_out, len(rows["ids"]))
  if not len(train):
    raise SystemExit(f"--held_out {args.held_out} leaves no trajectories to train on")
  print(f"{len(rows['ids'])} trajectories; per row: {rows['weights'].mean() * args.row_length:.0f} model tokens, "
        f"{rows['names'].mean() * args.row_length:.1f} name continuations", flush=True)

  model = Decoder(config)
  params = nn.unbox(model.init(jax.random.PRNGKey(args.seed), jnp.zeros((1, 8), jnp.int32))["params"])
  tx = optax.adamw(optax.warmup_cosine_decay_schedule(0.0, args.learning_rate, min(30, args.steps // 2), args.steps),
                   weight_decay=0.01)
  step = jax.jit(trainer.make_train_step(config, tx, z_loss=1e-4), donate_argnums=(0,))
  state = {"params": params, "opt_state": tx.init(params), "step": jnp.zeros((), jnp.int32)}
  correct = jax.jit(lambda p, b: jnp.argmax(model.apply({"params": p}, b["decoder_input_tokens"]), -1)
                    == b["decoder_target_tokens"])
  held_batch = _batch(rows["ids"][held], rows["weights"][held])
  rng = np.random.RandomState(args.seed)
  every = max(1, args.steps // args.evaluations)
  results, started = [], time.perf_counter()
  for i in range(1, args.steps + 1):
    pick = rng.choice(train, args.batch_size)
    state, metrics = step(state, _batch(rows["ids"][pick], rows["weights"][pick]))
    if i % every == 0 or i == args.steps:
      ok = np.asarray(correct(state["params"], held_batch))
      w, names = rows["weights"][held], rows["names"][held]
      kinds = rows["kinds"][held]
      by_kind = {kind: {"share": float((kinds == n).sum() / max((kinds > 0).sum(), 1)),
                        "accuracy": float(ok[kinds == n].mean()) if (kinds == n).any() else None}
                 for n, kind in enumerate(INDUCTION_KINDS, 1)}
      result = {"step": i, "train_loss": float(metrics["loss"]),
                "model_token_accuracy": float((ok * w).sum() / max(w.sum(), 1)),
                "name_continuation_accuracy": float((ok * names).sum() / max(names.sum(), 1)),
                "name_continuations_by_induction": by_kind,
                "seconds": round(time.perf_counter() - started, 1)}
      results.append(result)
      split = ", ".join(f"{kind} {v['share']:.0%} of them at {v['accuracy'] or 0:.1%}" for kind, v in by_kind.items())
      print(f"step {i}: loss {result['train_loss']:.3f}, model tokens {result['model_token_accuracy']:.1%}, "
            f"name continuations {result['name_continuation_accuracy']:.1%} ({split}) ({result['seconds']:.0f} s)",
            flush=True)
  if args.save_params:
    from flax import serialization
    Path(args.save_params).write_bytes(serialization.to_bytes(state["params"]))
  if args.json:
    Path(args.json).write_text(json.dumps({"args": vars(args), "results": results}, indent=1) + "\n")
  return 0


if __name__ == "__main__":
  sys.exit(main())
