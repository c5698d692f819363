"""Tests of masksearch_jax.data.world_io: atomic writes, round trips, cache, real-format copies."""

from __future__ import annotations

import json
import os

import pytest

from masksearch_jax.data import corpus_readers, world_io
from masksearch_jax.data.world import WorldConfig, generate_world


def test_round_trip_is_exact(tiny_world, tiny_world_dir):
  loaded = world_io.load_world(tiny_world_dir)
  assert loaded.config == tiny_world.config
  assert [p.to_json() for p in loaded.passages] == [p.to_json() for p in tiny_world.passages]
  assert [e.to_json() for e in loaded.entities.values()] == [e.to_json() for e in tiny_world.entities.values()]
  assert [f.to_json() for f in loaded.facts] == [f.to_json() for f in tiny_world.facts]
  assert [q.to_json() for q in loaded.questions] == [q.to_json() for q in tiny_world.questions]
  manifest = json.loads((tiny_world_dir / "manifest.json").read_text())
  assert manifest["counts"]["passages"] == len(tiny_world.passages)


def test_passages_file_is_a_plain_corpus(tiny_world, tiny_world_dir):
  read = list(corpus_readers.read_corpus(str(tiny_world_dir / "passages.jsonl")))
  assert [(p.id, p.title, p.text) for p in read] == [(p.id, p.title, p.text) for p in tiny_world.iter_passages()]


def test_refuses_to_overwrite_unless_asked(tiny_world, tmp_path):
  target = world_io.write_world(tiny_world, tmp_path / "w")
  with pytest.raises(FileExistsError, match="overwrite"):
    world_io.write_world(tiny_world, target)
  small = generate_world(WorldConfig(seed=5, size=100))
  world_io.write_world(small, target, overwrite=True)
  assert world_io.load_world(target).config.seed == 5
  assert sorted(os.listdir(tmp_path)) == ["w"]  # No temporary or old directories left behind.


def test_interrupted_write_leaves_nothing_that_looks_whole(tiny_world, tmp_path, monkeypatch):
  def explode(*args, **kwargs):
    raise KeyboardInterrupt("interrupted while writing questions")

  real = world_io._write_jsonl
  monkeypatch.setattr(world_io, "_write_jsonl",
                      lambda path, records: explode() if path.name == "questions.jsonl" else real(path, records))
  with pytest.raises(KeyboardInterrupt):
    world_io.write_world(tiny_world, tmp_path / "w")
  assert not (tmp_path / "w").exists()
  assert os.listdir(tmp_path) == []


def test_a_directory_without_manifest_is_refused(tmp_path):
  (tmp_path / "half").mkdir()
  (tmp_path / "half" / "passages.jsonl").write_text('{"id": "1", "title": "t", "text": "x"}\n')
  with pytest.raises(FileNotFoundError, match="not a complete world.*interrupted"):
    world_io.load_world(tmp_path / "half")


def test_bad_world_file_names_file_and_line(tiny_world, tmp_path):
  path = world_io.write_world(tiny_world, tmp_path / "w")
  lines = (path / "facts.jsonl").read_text().splitlines()
  lines[2] = lines[2][:-3]
  (path / "facts.jsonl").write_text("\n".join(lines) + "\n")
  with pytest.raises(ValueError, match=r"facts\.jsonl:3: bad JSON"):
    world_io.load_world(path)


def test_cache_generates_once_then_reuses(tmp_path):
  config = WorldConfig(seed=4, size=120)
  first = world_io.cached_world_dir(config, tmp_path, progress=False)
  stamp = (first / "manifest.json").stat().st_mtime_ns
  again = world_io.cached_world_dir(config, tmp_path, progress=False)
  assert again == first and (again / "manifest.json").stat().st_mtime_ns == stamp
  other = world_io.cached_world_dir(WorldConfig(seed=5, size=120), tmp_path, progress=False)
  assert other != first


def test_cache_regenerates_an_interrupted_entry(tmp_path):
  config = WorldConfig(seed=4, size=120)
  path = world_io.cached_world_dir(config, tmp_path, progress=False)
  (path / "manifest.json").unlink()
  assert world_io.cached_world_dir(config, tmp_path, progress=False) == path
  assert world_io.is_complete(path)


def test_corpus_format_copies_read_back_as_the_same_passages(tiny_world, tmp_path):
  path = world_io.write_world(tiny_world, tmp_path / "w", formats=["wiki18", "wikiextractor"])
  expected = [(p.title, p.text) for p in tiny_world.iter_passages()]
  wiki18 = list(corpus_readers.read_corpus(str(path / "formats" / "wiki18" / "wiki-18.jsonl.gz")))
  assert [(p.title, p.text) for p in wiki18] == expected
  assert [p.id for p in wiki18] == [p.id for p in tiny_world.passages]
  extracted = list(corpus_readers.read_corpus(str(path / "formats" / "wikiextractor")))
  assert [(p.title, p.text) for p in extracted] == expected


def test_unknown_format_is_refused_before_writing(tiny_world, tmp_path):
  with pytest.raises(ValueError, match="unknown world formats"):
    world_io.write_world(tiny_world, tmp_path / "w", formats=["parquet"])
  assert not (tmp_path / "w").exists()


def test_generate_world_command(tmp_path, capsys):
  from masksearch_jax import cli
  assert cli.main(["generate-world", "--out", str(tmp_path / "w"), "--seed", "3", "--size", "150"]) == 0
  out = capsys.readouterr().out
  assert "world seed=3 size=150" in out and "passages/s" in out
  assert world_io.load_world(tmp_path / "w").config == WorldConfig(seed=3, size=150)
