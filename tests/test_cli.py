"""Tests of the `masksearch` command's sub-commands and its error reporting."""

from __future__ import annotations

import subprocess
import sys

import pytest

from masksearch_jax import cli


@pytest.fixture(scope="module")
def world_passages(tmp_path_factory):
  out = tmp_path_factory.mktemp("cli") / "world"
  assert cli.main(["generate-world", "--out", str(out), "--size", "120", "--seed", "2"]) == 0
  return out / "passages.jsonl"


def test_build_index_then_search(world_passages, tmp_path, capsys):
  index = tmp_path / "idx"
  assert cli.main(["build-index", "--corpus", str(world_passages), "--index", str(index)]) == 0
  assert "passages/s" in capsys.readouterr().out
  first_title = world_passages.read_text().splitlines()[0].split('"title": "')[1].split('"')[0]
  assert cli.main(["search", "--index", str(index), "-k", "2", first_title]) == 0
  out = capsys.readouterr().out
  assert f"query: {first_title}" in out and "1. [" in out and first_title in out.split("\n")[1]


def test_user_errors_are_one_line_with_exit_code_2(world_passages, tmp_path, capsys):
  index = tmp_path / "idx"
  assert cli.main(["build-index", "--corpus", str(world_passages), "--index", str(index)]) == 0
  capsys.readouterr()
  assert cli.main(["build-index", "--corpus", str(world_passages), "--index", str(index)]) == 2
  err = capsys.readouterr().err.strip()
  assert err.startswith("masksearch build-index: error:") and "--overwrite" in err and "\n" not in err
  bad = tmp_path / "bad.jsonl"
  bad.write_text('{"id": "1", "title": "a", "text": "b"}\n{"id": "2", "title": \n')
  assert cli.main(["build-index", "--corpus", str(bad), "--format", "jsonl", "--index", str(tmp_path / "i2")]) == 2
  err = capsys.readouterr().err
  assert f"{bad}:2:" in err
  assert not (tmp_path / "i2").exists()  # Nothing half-built is left behind.
  assert cli.main(["search", "--index", str(tmp_path / "missing"), "q"]) == 2
  assert "no index directory" in capsys.readouterr().err


def test_skip_bad_reports_how_many_were_skipped(tmp_path, capsys):
  corpus = tmp_path / "c.jsonl"
  corpus.write_text('{"id": "1", "title": "a", "text": "b"}\nnot json\n{"id": "3", "title": "c", "text": "d"}\n')
  assert cli.main(["build-index", "--corpus", str(corpus), "--format", "jsonl", "--index", str(tmp_path / "i"),
                   "--skip_bad"]) == 0
  captured = capsys.readouterr()
  assert "indexed 2 passages" in captured.out and "skipped 1 malformed records" in captured.err


def test_help_is_fast_and_lists_the_commands():
  out = subprocess.run([sys.executable, "-m", "masksearch_jax", "--help"], capture_output=True, text=True,
                       check=True, timeout=60).stdout
  for command in ("quickstart", "generate-world", "build-index", "search", "serve-index"):
    assert command in out


_COMPILE = ("from masksearch_jax import cli; cli._persist_compiled_programs(); import jax, jax.numpy as jnp; "
            "jax.config.update('jax_persistent_cache_min_compile_time_secs', 0); jax.jit(lambda x: x * 2)(jnp.ones(3))")


def test_compiled_programs_persist_under_the_cache_unless_told_otherwise(tmp_path):
  import os
  env = {k: v for k, v in os.environ.items() if k != "JAX_COMPILATION_CACHE_DIR"}
  env["MASKSEARCH_CACHE"] = str(tmp_path / "cache")
  subprocess.run([sys.executable, "-c", _COMPILE], check=True, env=env, capture_output=True, timeout=120)
  assert any((tmp_path / "cache" / "xla").iterdir())
  env["JAX_COMPILATION_CACHE_DIR"] = str(tmp_path / "own")
  subprocess.run([sys.executable, "-c", _COMPILE], check=True, env=env, capture_output=True, timeout=120)
  assert any((tmp_path / "own").iterdir())
