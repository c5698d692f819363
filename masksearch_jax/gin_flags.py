"""T5X-style Gin flags: `--gin_file`, `--gin.NAME=VALUE`, `--gin_bindings`, `--gin_search_paths`.

T5X users type `--gin.TRAIN_STEPS=100`; this module rewrites that to the binding
`TRAIN_STEPS = 100` and parses files and bindings in T5X's order (files first,
later files override earlier ones, then bindings).
"""

from __future__ import annotations

# gin 0.5.0's resource reader calls importlib.util without importing it; an
# include through a directory that is not a Python package then fails.
import contextlib
import importlib.util  # noqa: F401  pylint: disable=unused-import
import logging
import os
from typing import Any, Callable, Iterable, Sequence

from masksearch_jax.errors import ConfigError

# Kept for callers that name the Gin flavour of the error.
GinConfigError = ConfigError

_MACRO_PREFIX = "--gin."

# The repository's gin/ directory. It has no __init__.py on purpose: a package
# named `gin` at the repository root would shadow gin-config itself.
DEFAULT_GIN_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "gin")


def rewrite_macro_flags(argv: Sequence[str]) -> list[str]:
  """Turns `--gin.NAME=VALUE` (or `--gin.NAME VALUE`) into `--gin_bindings NAME=VALUE`."""
  out: list[str] = []
  args = list(argv)
  i = 0
  while i < len(args):
    arg = args[i]
    if arg.startswith(_MACRO_PREFIX):
      body = arg[len(_MACRO_PREFIX):]
      if "=" in body:
        name, value = body.split("=", 1)
      elif i + 1 < len(args):
        name, value = body, args[i + 1]
        i += 1
      else:
        raise SystemExit(f"masksearch: flag {arg} has no value (write {arg}=VALUE)")
      out += ["--gin_bindings", f"{name} = {value}"]
    else:
      out.append(arg)
    i += 1
  return out


def _split_paths(search_paths: str | Iterable[str]) -> list[str]:
  if isinstance(search_paths, str):
    return [p for p in search_paths.split(",") if p]
  return [p for p in search_paths if p]


def parse(gin_files: Sequence[str], bindings: Sequence[str] = (), search_paths: str | Iterable[str] = "",
          finalize: bool = True) -> None:
  """Parses Gin files then bindings, searching `search_paths` and the repository's gin/."""
  import gin

  # gin logs an ERROR for every include it first tries as a Python resource.
  logging.getLogger().addFilter(_drop_gin_resource_noise)
  _guard_resource_reader()
  for path in _split_paths(search_paths) + [DEFAULT_GIN_DIR]:
    gin.add_config_file_search_path(path)
  # A second parse in one process (tests, notebooks) adds to a config an earlier parse finalized.
  locked = gin.config_is_locked()
  try:
    with gin.unlock_config() if locked else contextlib.nullcontext():
      gin.parse_config_files_and_bindings(list(gin_files), list(bindings), finalize_config=finalize and not locked)
  except (ValueError, AttributeError, TypeError, ImportError, OSError) as e:
    raise ConfigError(f"Gin: {_one_line(e)}") from e


def call_configured(fn: Callable[[], Any]) -> Any:
  """Calls a Gin-configured function; a macro or argument Gin could not supply becomes a ConfigError."""
  try:
    return fn()
  except TypeError as e:
    if "No values supplied by Gin" in str(e) or "missing 1 required" in str(e) and "macro" in str(e):
      raise ConfigError(f"Gin: {_one_line(e)}") from e
    raise


def _one_line(error: BaseException) -> str:
  """A Gin error message on one line: the message, then where it was (file or bindings line)."""
  lines = [line.strip() for line in str(error).splitlines() if line.strip()]
  if not lines:
    return type(error).__name__
  where = [line for line in lines[1:] if line.startswith("In ")]
  text = lines[0]
  if where:
    text += f" ({where[0][3:]}"
    location_index = lines.index(where[0]) + 1
    if location_index < len(lines) and not lines[location_index].startswith("In "):
      text += f": {lines[location_index]}"
    text += ")"
  return text


def _guard_resource_reader() -> None:
  """Makes gin's "is it a Python resource?" check answer no instead of raising.

  For an include such as 'models/tiny.gin', gin 0.5 asks importlib for a package
  'models'; when a namespace package of that name is importable (a `models/`
  directory without __init__.py on sys.path, as under pytest), its spec has no
  origin and gin raises TypeError instead of moving on to the search paths.
  """
  import gin

  readers = gin.config._FILE_READERS  # pylint: disable=protected-access
  for i, (reader, exists) in enumerate(readers):
    if getattr(exists, "_masksearch_guarded", False) or reader is open:
      continue

    def guarded(path, exists=exists):
      try:
        return exists(path)
      except TypeError:
        return False
    guarded._masksearch_guarded = True  # pylint: disable=protected-access
    readers[i] = (reader, guarded)


def _drop_gin_resource_noise(record: logging.LogRecord) -> bool:
  return not (record.levelno == logging.ERROR and str(record.msg).startswith("Path not found: "))
