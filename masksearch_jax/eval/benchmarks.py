"""The questions of a benchmark to evaluate on, from any format the repository reads.

Benchmark names are the QA formats of `data.qa_formats` (hotpotqa, musique, 2wiki, bamboogle,
fanoutqa, freshqa, flashrag, searchr1: the file is read with that format's reader, so aliases
and metadata come out as `QAExample`s), plus `world`: the embedded world's questions, from a
world directory (`masksearch generate-world`) or, without a path, the cached world of a
`WorldConfig`, one split of it.
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path
from typing import Any, Sequence

from masksearch_jax.data import qa_formats
from masksearch_jax.data.qa_formats import QAExample
from masksearch_jax.errors import ConfigError

WORLD = "world"
BENCHMARKS = (*qa_formats.FORMATS, WORLD)
WORLD_SPLITS = ("train", "dev", "test")


def check_benchmark(name: str) -> str:
  """`name` if it is a known benchmark, else a ConfigError listing the known ones."""
  if name not in BENCHMARKS:
    raise ConfigError(f"unknown benchmark {name!r}; choose from {', '.join(BENCHMARKS)}")
  return name


def load_benchmark(name: str, path: str | os.PathLike | None = None, *, split: str = "test",
                   world_config=None, limit: int = 0, types: Sequence[str] = (), skip_bad: bool = False
                   ) -> list[QAExample]:
  """The questions of a benchmark, in file order (the world's: interleaved by type).

  Args:
    name: One of `BENCHMARKS`.
    path: The benchmark's file; for `world`, a world directory or None (the cached world of
      `world_config`).
    split: For `world` only: which questions ('train', 'dev' or 'test'; the world's splits
      are by topic entity, so 'test' questions are about entities never trained on).
    world_config: For `world` without a path: the `WorldConfig` whose cached world to use.
    limit: Keep the first `limit` questions (0: all). The world lists its questions one type
      after another, so its questions are interleaved by type (one of each type in turn, each
      type in its own order): the first `limit` then cover every type asked for, as a benchmark
      file's first questions do, instead of only the first type.
    types: Keep only questions whose metadata `type` is one of these (empty: all); for
      example the world's question types, or HotpotQA's bridge/comparison.
    skip_bad: Skip malformed records instead of failing.

  Raises:
    ConfigError: Unknown benchmark, split, or a benchmark file that is not given.
    FileNotFoundError: The file or world directory does not exist.
  """
  check_benchmark(name)
  if name == WORLD:
    examples = _world_examples(path, split, world_config)
  else:
    if path is None:
      raise ConfigError(f"benchmark {name} needs the path of its file")
    examples = qa_formats.read_qa(path, name, skip_bad=skip_bad)
  if types:
    wanted = set(types)
    examples = (e for e in examples if e.metadata.get("type") in wanted)
  if limit:
    examples = itertools.islice(examples, limit)
  return list(examples)


def _world_examples(path: str | os.PathLike | None, split: str, world_config) -> list[QAExample]:
  from masksearch_jax.data import world_io
  if split not in WORLD_SPLITS:
    raise ConfigError(f"unknown world split {split!r}; choose from {', '.join(WORLD_SPLITS)}")
  if path is None:
    if world_config is None:
      raise ConfigError("benchmark world needs a world directory or a WorldConfig")
    path = world_io.cached_world_dir(world_config)
  elif not Path(path).is_dir():
    raise FileNotFoundError(f"world directory not found: {path}")
  world = world_io.load_world(path)
  return _interleaved_by_type([qa_formats.question_to_example(q) for q in world.questions if q.split == split])


def _interleaved_by_type(examples: list[QAExample]) -> list[QAExample]:
  """One example of each type in turn (types in order of first appearance), each type in its own order."""
  by_type: dict[Any, list[QAExample]] = {}
  for example in examples:
    by_type.setdefault(example.metadata.get("type"), []).append(example)
  rounds = itertools.zip_longest(*by_type.values())
  return [example for round_ in rounds for example in round_ if example is not None]


def world_passages(path: str | os.PathLike | None, world_config=None) -> Path:
  """The passages file of a world directory (or of `world_config`'s cached world)."""
  from masksearch_jax.data import world_io
  directory = Path(path) if path is not None else world_io.cached_world_dir(world_config)
  return directory / "passages.jsonl"
