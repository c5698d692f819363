"""Tests of loading benchmark questions (masksearch_jax/eval/benchmarks.py)."""

from __future__ import annotations

import collections

from masksearch_jax.data import world_io
from masksearch_jax.eval import benchmarks


def test_the_first_world_questions_cover_every_type(tiny_world_dir):
  world = world_io.load_world(tiny_world_dir)
  in_file = [q for q in world.questions if q.split == "test"]
  types = list(dict.fromkeys(q.type for q in in_file))
  changes = sum(a.type != b.type for a, b in zip(in_file, in_file[1:]))
  assert len(types) == 4 and changes == 3  # The world lists them type by type.
  first = benchmarks.load_benchmark("world", tiny_world_dir, limit=8)
  assert [e.metadata["type"] for e in first] == types * 2
  asked = types[1:]
  some = benchmarks.load_benchmark("world", tiny_world_dir, limit=6, types=asked)
  assert [e.metadata["type"] for e in some] == asked * 2
  # All of them: the same questions, each type in its own order.
  every = benchmarks.load_benchmark("world", tiny_world_dir)
  assert sorted(e.id for e in every) == sorted(q.id for q in in_file)
  for kind in types:
    assert [e.id for e in every if e.metadata["type"] == kind] == [q.id for q in in_file if q.type == kind]
  assert collections.Counter(e.metadata["type"] for e in every) == collections.Counter(q.type for q in in_file)
