"""Tests of the main job (masksearch quickstart) and its Gin surface."""

from __future__ import annotations

import json

import gin
import pytest

from masksearch_jax import cli


@pytest.fixture(autouse=True)
def _clean_gin():
  gin.clear_config()
  yield
  gin.clear_config()


def _quickstart(workdir, *extra):
  return cli.main(["quickstart", f"--gin.WORKDIR='{workdir}'", "--gin.WORLD_SIZE=300", *extra])


def test_quickstart_builds_searches_and_reuses(tmp_path, capsys):
  assert _quickstart(tmp_path / "qs") == 0
  out = capsys.readouterr().out
  assert "world: generating seed=0 size=300" in out and "passages/s" in out
  summary = json.loads((tmp_path / "qs" / "summary.json").read_text())
  assert summary["searches"] == 6 and summary["passages"] > 400
  assert summary["facts_found_in_top_k"] >= 5  # Fact look-ups by name and relation succeed.
  assert out.count("query: ") == 6

  gin.clear_config()
  assert _quickstart(tmp_path / "qs") == 0
  out = capsys.readouterr().out
  assert "world: reusing" in out and "index: reusing" in out


def test_gin_override_changes_the_world_and_rebuilds(tmp_path, capsys):
  assert _quickstart(tmp_path / "qs") == 0
  first = json.loads((tmp_path / "qs" / "summary.json").read_text())
  gin.clear_config()
  assert _quickstart(tmp_path / "qs", "--gin.WORLD_SEED=7") == 0
  out = capsys.readouterr().out
  assert "generating seed=7 size=300" in out and "index: building" in out
  second = json.loads((tmp_path / "qs" / "summary.json").read_text())
  assert second["facts"] != first["facts"] or second["passages"] != first["passages"]


def test_unknown_binding_is_one_clear_error(tmp_path, capsys):
  assert cli.main(["quickstart", f"--gin.WORKDIR='{tmp_path}'", "--gin_bindings=world.WorldConfig.sise = 3"]) == 2
  err = capsys.readouterr().err.strip()
  assert "sise" in err and "\n" not in err
