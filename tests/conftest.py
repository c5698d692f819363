"""Fixtures shared by the whole suite: a tiny world, its files, and its index."""

from __future__ import annotations

import os

import pytest

from masksearch_jax.data.world import WorldConfig, generate_world

TINY_WORLD_CONFIG = WorldConfig(seed=0, size=400)


@pytest.fixture(scope="session", autouse=True)
def _hermetic_cache(tmp_path_factory):
  """Keeps every cache the code under test writes inside the test's temporary directory."""
  previous = os.environ.get("MASKSEARCH_CACHE")
  os.environ["MASKSEARCH_CACHE"] = str(tmp_path_factory.mktemp("masksearch_cache"))
  yield
  if previous is None:
    os.environ.pop("MASKSEARCH_CACHE", None)
  else:
    os.environ["MASKSEARCH_CACHE"] = previous


@pytest.fixture(scope="session")
def tiny_world():
  """A 400-person world (about 770 passages): big enough for every kind of fact and question."""
  return generate_world(TINY_WORLD_CONFIG)


@pytest.fixture(scope="session")
def tiny_world_dir(tiny_world, tmp_path_factory):
  """`tiny_world` written to disk by world_io."""
  from masksearch_jax.data import world_io
  return world_io.write_world(tiny_world, tmp_path_factory.mktemp("worlds") / "tiny")


@pytest.fixture(scope="session")
def tiny_index(tiny_world, tmp_path_factory):
  """A Tantivy index of `tiny_world`'s passages."""
  from masksearch_jax.retrieval import tantivy_index
  index_dir = tmp_path_factory.mktemp("indexes") / "tiny"
  tantivy_index.build_index(tiny_world.iter_passages(), index_dir, progress=False)
  return index_dir
