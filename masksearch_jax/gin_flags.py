"""T5X-style Gin flags: `--gin_file`, `--gin.NAME=VALUE`, `--gin_bindings`, `--gin_search_paths`.

T5X users type `--gin.TRAIN_STEPS=100`; this module rewrites that to the binding
`TRAIN_STEPS = 100` and parses files and bindings in T5X's order (files first,
later files override earlier ones, then bindings).
"""

from __future__ import annotations

# gin 0.5.0's resource reader calls importlib.util without importing it; an
# include through a directory that is not a Python package then fails.
import importlib.util  # noqa: F401  pylint: disable=unused-import
import logging
import os
from typing import Iterable, Sequence

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
  for path in _split_paths(search_paths) + [DEFAULT_GIN_DIR]:
    gin.add_config_file_search_path(path)
  gin.parse_config_files_and_bindings(list(gin_files), list(bindings), finalize_config=finalize)


def _drop_gin_resource_noise(record: logging.LogRecord) -> bool:
  return not (record.levelno == logging.ERROR and str(record.msg).startswith("Path not found: "))
