"""Atomic file writes: a reader never sees a half-written file.

Every file of a workdir goes through here: write to a temporary file in the same
directory, flush and fsync it, then `os.replace` it onto the final name (atomic on POSIX).
In a multi-host run only process 0 writes; the other processes compute the same values and
their writes are dropped, so that they never race on the shared workdir.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile
from collections.abc import Iterator
from typing import Any

import numpy as np

from hashing import parallel


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w") -> Iterator[Any]:
  """Opens a temporary file beside `path`; renames it onto `path` only on success (outside
  process 0 of a multi-host run: an in-memory file that is thrown away)."""
  if not parallel.is_main_process():
    yield io.BytesIO() if "b" in mode else io.StringIO()
    return
  path = os.fspath(path)
  directory = os.path.dirname(os.path.abspath(path))
  fd, tmp = tempfile.mkstemp(
    dir=directory, prefix="." + os.path.basename(path) + ".", suffix=".tmp"
  )
  try:
    with os.fdopen(fd, mode) as f:
      yield f
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    with contextlib.suppress(FileNotFoundError):
      os.remove(tmp)
    raise


def write_text(path: str | os.PathLike, text: str) -> None:
  with atomic_open(path, "w") as f:
    f.write(text)


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
  with atomic_open(path, "wb") as f:
    f.write(data)


def write_json(path: str | os.PathLike, obj: Any) -> None:
  write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def write_npz(path: str | os.PathLike, **arrays: np.ndarray) -> None:
  buffer = io.BytesIO()
  np.savez_compressed(buffer, **arrays)
  write_bytes(path, buffer.getvalue())


def append_jsonl(path: str | os.PathLike, record: dict[str, Any]) -> None:
  """Appends one JSON line. A crash can at worst leave a last partial line, which `read_jsonl`
  skips."""
  if not parallel.is_main_process():
    return
  with open(path, "a") as f:
    f.write(jsonl_line(record))


def jsonl_line(record: dict[str, Any]) -> str:
  """One record as a JSON line (sorted keys, newline-terminated), as `append_jsonl` writes it."""
  return json.dumps(record, sort_keys=True) + "\n"


def read_jsonl(path: str | os.PathLike) -> list[dict[str, Any]]:
  """The records of a JSON-lines file ([] when it does not exist), without a line cut short by a
  kill."""
  if not os.path.exists(path):
    return []
  records = []
  with open(path) as f:
    for line in f:
      try:
        records.append(json.loads(line))
      except json.JSONDecodeError:
        pass  # a line cut short by a kill
  return records
