"""Output that appears under its final name only once it is complete.

`atomic_output` yields a hidden temporary sibling of the target to fill (a file or a
directory) and renames it into place at the end, so an interrupted write never leaves a
partial file or directory under the target name; it refuses to replace an existing target
unless asked to. `open_text` opens a new UTF-8 text file, compressed or not, that is flushed
to disk when closed; `atomic_text` is the two together.
"""

from __future__ import annotations

import bz2
import contextlib
import gzip
import io
import os
import pathlib
import secrets
import shutil
from typing import IO, Iterator


def temporary_sibling(target: pathlib.Path, tag: str) -> pathlib.Path:
  """A fresh hidden name next to `target`: `.NAME.TAG-PID-RANDOM`."""
  return target.with_name(f".{target.name}.{tag}-{os.getpid()}-{secrets.token_hex(4)}")


def remove(path: pathlib.Path) -> None:
  """Removes a file, a link or a whole directory tree; nothing if `path` does not exist."""
  if path.is_dir() and not path.is_symlink():
    shutil.rmtree(path)
  elif path.exists() or path.is_symlink():
    path.unlink()


@contextlib.contextmanager
def atomic_output(target: str | os.PathLike, *, overwrite: bool, directory: bool) -> Iterator[pathlib.Path]:
  """Yields a temporary path to fill; on success it replaces `target`, on failure it is removed.

  Args:
    target: The final file or directory.
    overwrite: Replace an existing target; otherwise raise before writing anything.
    directory: Create the temporary path as an empty directory (else it does not exist yet).

  Raises:
    FileExistsError: `target` exists and `overwrite` is false.
  """
  target = pathlib.Path(target)
  if (target.exists() or target.is_symlink()) and not overwrite:
    raise FileExistsError(f"{target} already exists; pass overwrite=True to replace it")
  target.parent.mkdir(parents=True, exist_ok=True)
  tmp = temporary_sibling(target, "tmp")
  if directory:
    tmp.mkdir()
  try:
    yield tmp
  except BaseException:
    remove(tmp)
    raise
  target_is_dir = target.is_dir() and not target.is_symlink()
  if target_is_dir or (directory and (target.exists() or target.is_symlink())):
    # os.replace cannot replace a directory, nor a file with a directory: move the old one
    # aside first. The target name is briefly absent, but never names partial output.
    old = temporary_sibling(target, "old")
    os.replace(target, old)
    os.replace(tmp, target)
    remove(old)
  else:
    os.replace(tmp, target)


@contextlib.contextmanager
def open_text(path: str | os.PathLike, *, compression: str | None = None, final_name: str = "",
              compresslevel: int = 9) -> Iterator[IO[str]]:
  """Opens a new UTF-8 text file for writing ("\\n" line ends), fsynced when it is closed.

  Args:
    path: The file to create; it must not exist.
    compression: "gz", "bz2" or None.
    final_name: The name the file will have in the end; gzip records it (without ".gz").
    compresslevel: The gzip compression level.

  Raises:
    FileExistsError: `path` exists.
    ValueError: Unknown compression.
  """
  with open(path, "xb") as raw:
    if compression == "gz":
      # A fixed mtime and the final name keep the bytes independent of when and where.
      stream: IO[bytes] = gzip.GzipFile(filename=final_name.removesuffix(".gz"), mode="wb", fileobj=raw,
                                        compresslevel=compresslevel, mtime=0)
    elif compression == "bz2":
      stream = bz2.BZ2File(raw, "wb")
    elif compression is None:
      stream = raw
    else:
      raise ValueError(f"unknown compression {compression!r}")
    # Closing `text` closes `stream`; a compressed stream leaves `raw` open for the fsync.
    with io.TextIOWrapper(stream, encoding="utf-8", newline="\n") as text:
      yield text
      if stream is raw:
        text.flush()
        os.fsync(raw.fileno())
    if stream is not raw:
      raw.flush()
      os.fsync(raw.fileno())


@contextlib.contextmanager
def atomic_text(target: str | os.PathLike, *, overwrite: bool, compression: str | None = None,
                compresslevel: int = 9) -> Iterator[IO[str]]:
  """A new UTF-8 text file (see `open_text`) that appears under `target` only once it is complete.

  Raises:
    FileExistsError: `target` exists and `overwrite` is false (before anything is written).
  """
  target = pathlib.Path(target)
  with atomic_output(target, overwrite=overwrite, directory=False) as tmp:
    with open_text(tmp, compression=compression, final_name=target.name, compresslevel=compresslevel) as f:
      yield f
