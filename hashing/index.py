"""Index files: packed codes, their ids (file paths) and metadata, checked on load.

Layout (all integers little-endian):
  magic        8 bytes  b"HASHIDX\\0"
  version      uint32   FORMAT_VERSION
  header_size  uint32   H
  header       H bytes  UTF-8 JSON: num_bits, count, code_bytes, ids_bytes, model_hash,
                        payload_sha256, metadata
  payload               codes (count * code_bytes bytes, np.packbits order, as codes.npz),
                        then the ids (ids_bytes bytes: UTF-8, each id followed by a NUL byte)

A file is written atomically (hashing.io). Loading rejects, with one UserError each, a file
that is not an index, of another format version, truncated or with trailing bytes, whose
payload does not match its SHA-256 (corrupt), whose codes have bits set past num_bits, or that
does not match what the caller expects (bits, model hash).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import struct
from typing import Any

import numpy as np

from hashing import io as hio
from hashing.errors import UserError

MAGIC = b"HASHIDX\0"
FORMAT_VERSION = 1
_PREFIX = struct.Struct("<8sII")  # magic, version, header size
_MAX_HEADER = 1 << 24  # a larger header means a corrupt size field


@dataclasses.dataclass(frozen=True, eq=False)  # eq=False: `==` on arrays is not a bool.
class CodeIndex:
  """Packed binary codes of N items and their ids.

  Attributes:
    codes: uint8 `[N, ceil(num_bits / 8)]`, `np.packbits(code > 0, axis=1)`.
    ids: N strings (file paths relative to `metadata["root"]`, for a folder index).
    num_bits: code length q.
    model_hash: the hash of the model that made the codes (see `search.model_hash`); queries
      must be encoded by the same model.
    metadata: JSON-ready extras (root folder, image shape, workdir, ...).
  """

  codes: np.ndarray
  ids: tuple[str, ...]
  num_bits: int
  model_hash: str
  metadata: dict[str, Any] = dataclasses.field(default_factory=dict)

  def __post_init__(self):
    # Callers build indexes from checked data; a failure here is a bug, hence ValueError.
    codes = np.asarray(self.codes)
    if codes.dtype != np.uint8 or codes.ndim != 2:
      raise ValueError(f"codes must be uint8 [N, bytes]; got {codes.dtype} {codes.shape}")
    if codes.shape[1] != -(-self.num_bits // 8):
      raise ValueError(f"{codes.shape[1]} bytes per code do not hold {self.num_bits} bits")
    object.__setattr__(self, "ids", tuple(str(i) for i in self.ids))
    if len(self.ids) != len(codes):
      raise ValueError(f"{len(self.ids)} ids for {len(codes)} codes")
    if any("\0" in i for i in self.ids):
      raise ValueError("ids cannot contain NUL characters")

  def __len__(self) -> int:
    return len(self.ids)


def save(path: str | os.PathLike, index: CodeIndex) -> None:
  """Writes `index` to `path` atomically (see the module docstring for the layout)."""
  codes = np.ascontiguousarray(index.codes).tobytes()
  ids = "".join(i + "\0" for i in index.ids).encode("utf-8")
  header = {
    "num_bits": int(index.num_bits),
    "count": len(index),
    "code_bytes": int(index.codes.shape[1]),
    "ids_bytes": len(ids),
    "model_hash": index.model_hash,
    "payload_sha256": hashlib.sha256(codes + ids).hexdigest(),
    "metadata": index.metadata,
  }
  header_bytes = json.dumps(header, sort_keys=True).encode("utf-8")
  prefix = _PREFIX.pack(MAGIC, FORMAT_VERSION, len(header_bytes))
  hio.write_bytes(path, prefix + header_bytes + codes + ids)


def load(
  path: str | os.PathLike,
  *,
  num_bits: int | None = None,
  model_hash: str | None = None,
) -> CodeIndex:
  """Reads and checks an index file.

  Args:
    path: the file.
    num_bits: if given, the code length the caller needs.
    model_hash: if given, the hash of the model the caller encodes queries with.

  Raises:
    UserError: the file is missing, not an index, of another version, truncated, corrupt, or
      does not match num_bits / model_hash.
  """
  path = os.fspath(path)
  try:
    with open(path, "rb") as f:
      data = f.read()
  except OSError as e:
    raise UserError(f"cannot read index file {path!r} ({e.strerror}); build it first") from None
  rebuild = "rebuild it with `python -m hashing.search_cli index`"
  if len(data) < _PREFIX.size or data[:8] != MAGIC:
    raise UserError(f"{path!r} is not a hashing index file (no {MAGIC[:7].decode()} header)")
  _, version, header_size = _PREFIX.unpack_from(data)
  if version != FORMAT_VERSION:
    raise UserError(
      f"{path!r} has index format version {version}, this version of hashing reads "
      f"{FORMAT_VERSION}; {rebuild}"
    )
  header_end = _PREFIX.size + header_size
  if header_size > _MAX_HEADER or header_end > len(data):
    raise UserError(f"{path!r} is truncated or corrupt (header cut short); {rebuild}")
  header = _parse_header(data[_PREFIX.size : header_end], path, rebuild)
  count, code_bytes, ids_bytes = header["count"], header["code_bytes"], header["ids_bytes"]
  expected = header_end + count * code_bytes + ids_bytes
  if len(data) != expected:
    problem = "truncated" if len(data) < expected else "has trailing bytes"
    raise UserError(
      f"{path!r} is {problem}: its header announces {expected} bytes, the file has "
      f"{len(data)}; {rebuild}"
    )
  payload = data[header_end:]
  if hashlib.sha256(payload).hexdigest() != header["payload_sha256"]:
    raise UserError(f"{path!r} is corrupt: its codes or ids fail the SHA-256 check; {rebuild}")
  bits = header["num_bits"]
  if code_bytes != -(-bits // 8):
    raise UserError(f"{path!r} is corrupt: {code_bytes} bytes per code for {bits} bits")
  codes = np.frombuffer(payload, np.uint8, count * code_bytes).reshape(count, code_bytes).copy()
  if bits % 8 and np.any(codes[:, -1] & np.uint8((1 << (8 - bits % 8)) - 1)):
    raise UserError(f"{path!r} is corrupt: codes have bits set past num_bits={bits}")
  try:
    ids = payload[count * code_bytes :].decode("utf-8").split("\0")
  except UnicodeDecodeError:
    raise UserError(f"{path!r} is corrupt: its ids are not UTF-8; {rebuild}") from None
  if ids[-1] != "":  # each id ends with NUL, so the split ends with an empty string
    raise UserError(f"{path!r} is corrupt: its ids are not NUL-terminated; {rebuild}")
  ids = ids[:-1]
  if len(ids) != count:
    raise UserError(f"{path!r} is corrupt: {len(ids)} ids for {count} codes; {rebuild}")
  if num_bits is not None and bits != num_bits:
    raise UserError(
      f"{path!r} holds {bits}-bit codes but the model makes {num_bits}-bit codes; use the "
      f"index built with this model, or {rebuild}"
    )
  if model_hash is not None and header["model_hash"] != model_hash:
    raise UserError(
      f"{path!r} was built with another model (hash {header['model_hash'][:12]}..., this one "
      f"is {model_hash[:12]}...): its codes are not comparable with this model's; use the "
      f"matching --workdir, or {rebuild}"
    )
  return CodeIndex(
    codes=codes,
    ids=tuple(ids),
    num_bits=bits,
    model_hash=header["model_hash"],
    metadata=header["metadata"],
  )


def _parse_header(raw: bytes, path: str, rebuild: str) -> dict[str, Any]:
  try:
    header = json.loads(raw.decode("utf-8"))
  except (UnicodeDecodeError, json.JSONDecodeError):
    raise UserError(f"{path!r} is corrupt: unreadable header; {rebuild}") from None
  fields = {
    "num_bits": int,
    "count": int,
    "code_bytes": int,
    "ids_bytes": int,
    "model_hash": str,
    "payload_sha256": str,
    "metadata": dict,
  }
  for name, kind in fields.items():
    value = header.get(name) if isinstance(header, dict) else None
    if not isinstance(value, kind) or isinstance(value, bool) or (kind is int and value < 0):
      raise UserError(f"{path!r} is corrupt: header field {name!r} is missing or invalid")
  if header["num_bits"] < 1:
    raise UserError(f"{path!r} is corrupt: num_bits={header['num_bits']}")
  return header
