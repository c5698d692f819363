"""Writing a generated world to disk, reading it back, and caching it.

A world directory holds:

  manifest.json      config, counts and the list of files (written last: a
                     directory without it is an interrupted write, never used)
  passages.jsonl     one page passage a line: id, title, text (so any reader of
                     plain {id,title,text} jsonl can use it), plus entity, split,
                     sentence offsets, the facts each sentence states, mentions
  entities.jsonl     id, kind, name, split, attrs
  facts.jsonl        id, subject, relation, object
  questions.jsonl    multi-hop questions with answers, aliases and evidence
  formats/           optional copies in real formats (wiki-18, wikiextractor,
                     FlashRAG, HotpotQA, MuSiQue, 2WikiMultiHopQA)
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Iterable, Sequence

from masksearch_jax.data.atomic_files import atomic_output
from masksearch_jax.data.world import GENERATOR_VERSION, World, WorldConfig, generate_world
from masksearch_jax.data.world_types import Entity, Fact, Question, WorldPassage

MANIFEST = "manifest.json"
FORMAT_VERSION = 1
CORPUS_FORMATS = ("wiki18", "wikiextractor")
QA_FORMATS = ("flashrag", "hotpotqa", "musique", "2wiki")


def _write_jsonl(path: Path, records: Iterable[dict]) -> int:
  count = 0
  with open(path, "w", encoding="utf-8") as f:
    for record in records:
      f.write(json.dumps(record, ensure_ascii=False))
      f.write("\n")
      count += 1
  return count


def _read_jsonl(path: Path) -> Iterable[dict]:
  with open(path, encoding="utf-8") as f:
    for line_number, line in enumerate(f, 1):
      if line.strip():
        try:
          yield json.loads(line)
        except json.JSONDecodeError as e:
          raise ValueError(f"{path}:{line_number}: bad JSON in a world file ({e.msg})") from e


def write_world(world: World, out_dir: str | os.PathLike, *, overwrite: bool = False,
                formats: Sequence[str] = ()) -> Path:
  """Writes `world` to `out_dir` atomically (into a temporary sibling, then renamed).

  Args:
    world: The world to write.
    out_dir: Target directory; must not exist unless `overwrite`.
    overwrite: Replace an existing world directory.
    formats: Extra copies under formats/: any of CORPUS_FORMATS and QA_FORMATS.
  """
  out = Path(out_dir)
  unknown = set(formats) - set(CORPUS_FORMATS) - set(QA_FORMATS)
  if unknown:
    raise ValueError(f"unknown world formats {sorted(unknown)}; choose from {CORPUS_FORMATS + QA_FORMATS}")
  # The message names the CLI flag too, so the check is made here rather than by `atomic_output`.
  if out.exists() and not overwrite:
    raise FileExistsError(f"{out} already exists; pass overwrite=True (--overwrite) to replace it")
  with atomic_output(out, overwrite=True, directory=True) as tmp:
    counts = {
        "passages": _write_jsonl(tmp / "passages.jsonl", (p.to_json() for p in world.passages)),
        "entities": _write_jsonl(tmp / "entities.jsonl", (e.to_json() for e in world.entities.values())),
        "facts": _write_jsonl(tmp / "facts.jsonl", (f.to_json() for f in world.facts)),
        "questions": _write_jsonl(tmp / "questions.jsonl", (q.to_json() for q in world.questions)),
    }
    if formats:
      _write_formats(world, tmp / "formats", formats)
    manifest = {"format_version": FORMAT_VERSION, "generator_version": GENERATOR_VERSION, "config": _config_json(world.config), "counts": counts,
                "formats": list(formats)}
    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
  return out


def _write_formats(world: World, out: Path, formats: Sequence[str]) -> None:
  from masksearch_jax.data import corpus_writers
  out.mkdir(parents=True)
  passages = list(world.iter_passages())
  if "wiki18" in formats:
    corpus_writers.write_wiki18(passages, out / "wiki18" / "wiki-18.jsonl.gz")
  if "wikiextractor" in formats:
    corpus_writers.write_wikiextractor_json(passages, out / "wikiextractor")
  qa = [f for f in formats if f in QA_FORMATS]
  if qa:
    from masksearch_jax.data import qa_formats
    qa_formats.write_world_questions(world, out, qa)


def _config_json(config: WorldConfig) -> dict:
  return {"seed": config.seed, "size": config.size, "dev_fraction": config.dev_fraction,
          "test_fraction": config.test_fraction, "questions_per_person": config.questions_per_person}


def is_complete(world_dir: str | os.PathLike) -> bool:
  """True when `world_dir` holds a fully written world."""
  return (Path(world_dir) / MANIFEST).is_file()


def load_config(world_dir: str | os.PathLike) -> WorldConfig:
  """The config a complete world directory was generated from."""
  manifest = json.loads((Path(world_dir) / MANIFEST).read_text(encoding="utf-8"))
  return WorldConfig(**manifest["config"])


def load_world(world_dir: str | os.PathLike) -> World:
  """Reads a world written by `write_world`."""
  path = Path(world_dir)
  if not is_complete(path):
    raise FileNotFoundError(f"{path} is not a complete world directory (no {MANIFEST}; interrupted write?)")
  manifest = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
  if manifest.get("format_version") != FORMAT_VERSION:
    raise ValueError(f"{path / MANIFEST}: format_version {manifest.get('format_version')} is not "
                     f"{FORMAT_VERSION}; regenerate the world")
  if manifest.get("generator_version") != GENERATOR_VERSION:
    raise ValueError(f"{path / MANIFEST}: made by world generator version {manifest.get('generator_version')}, "
                     f"this code is version {GENERATOR_VERSION}; regenerate the world")
  config = WorldConfig(**manifest["config"])
  entities = {e.id: e for e in map(Entity.from_json, _read_jsonl(path / "entities.jsonl"))}
  facts = [Fact.from_json(r) for r in _read_jsonl(path / "facts.jsonl")]
  passages = [WorldPassage.from_json(r) for r in _read_jsonl(path / "passages.jsonl")]
  questions = [Question.from_json(r) for r in _read_jsonl(path / "questions.jsonl")]
  return World(config, entities, facts, passages, questions)


def generate_and_write(config: WorldConfig, out_dir: str | os.PathLike, *, overwrite: bool = False,
                       formats: Sequence[str] = (), progress: bool = True) -> Path:
  """Generates the world of `config`, writes it, and prints a one-line summary."""
  start = time.perf_counter()
  world = generate_world(config, progress=progress)
  generated = time.perf_counter() - start
  path = write_world(world, out_dir, overwrite=overwrite, formats=formats)
  total = time.perf_counter() - start
  print(f"world seed={config.seed} size={config.size}: {len(world.entities):,} entities, {len(world.facts):,} "
        f"facts, {len(world.passages):,} passages, {len(world.questions):,} questions; generated in "
        f"{generated:.1f}s ({len(world.passages) / max(generated, 1e-9):,.0f} passages/s), written in "
        f"{total - generated:.1f}s -> {path}")
  return path


def default_cache_dir() -> Path:
  """$MASKSEARCH_CACHE, else ~/.cache/masksearch_jax."""
  return Path(os.environ.get("MASKSEARCH_CACHE") or Path.home() / ".cache" / "masksearch_jax")


def cached_world_dir(config: WorldConfig, cache_dir: str | os.PathLike | None = None, *,
                     progress: bool = True) -> Path:
  """The directory of `config`'s world in the cache, generated on first use."""
  key = json.dumps(_config_json(config), sort_keys=True) + f"/v{FORMAT_VERSION}/g{GENERATOR_VERSION}"
  digest = hashlib.sha256(key.encode()).hexdigest()[:10]
  path = Path(cache_dir or default_cache_dir()) / "worlds" / f"seed{config.seed}-size{config.size}-{digest}"
  if not is_complete(path):
    generate_and_write(config, path, overwrite=path.exists(), progress=progress)
  return path
