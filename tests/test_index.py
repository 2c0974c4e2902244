"""Tests of hashing.index: index files round-trip, and every damaged or mismatched file is
rejected with a UserError that says what is wrong."""

from __future__ import annotations

import hashlib
import json
import os
import struct

import numpy as np
import pytest

from hashing import index
from hashing.errors import UserError


def _example(num_bits: int = 20, count: int = 50) -> index.CodeIndex:
  rng = np.random.default_rng(num_bits)
  codes = np.packbits(rng.random((count, num_bits)) < 0.5, axis=1)
  ids = tuple(f"class{i % 3}/image é {i}.png" for i in range(count))  # non-ASCII on purpose
  return index.CodeIndex(codes, ids, num_bits, "ab" * 32, {"root": "/data/photos"})


def _raw(header: dict, payload: bytes, version: int = index.FORMAT_VERSION) -> bytes:
  """An index file written by hand, with a correct checksum unless the header says otherwise."""
  header = {"payload_sha256": hashlib.sha256(payload).hexdigest(), **header}
  text = json.dumps(header).encode()
  return index.MAGIC + struct.pack("<II", version, len(text)) + text + payload


def _header(**changes) -> dict:
  return {
    "num_bits": 12,
    "count": 1,
    "code_bytes": 2,
    "ids_bytes": 2,
    "model_hash": "h",
    "metadata": {},
    **changes,
  }


@pytest.mark.parametrize("num_bits,count", [(20, 50), (48, 7), (64, 1), (100, 3), (16, 0)])
def test_round_trip(tmp_path, num_bits, count):
  original = _example(num_bits, count)
  path = tmp_path / "photos.idx"
  index.save(path, original)
  loaded = index.load(path, num_bits=num_bits, model_hash="ab" * 32)
  np.testing.assert_array_equal(loaded.codes, original.codes)
  assert loaded.codes.dtype == np.uint8 and loaded.codes.shape == original.codes.shape
  assert loaded.ids == original.ids
  assert (loaded.num_bits, loaded.model_hash, loaded.metadata) == (
    num_bits,
    "ab" * 32,
    {"root": "/data/photos"},
  )
  assert [p.name for p in tmp_path.iterdir()] == ["photos.idx"]  # atomic: no temporary left
  # 48-bit codes take 6 bytes each in the file, plus the ids and a small header.
  ids_bytes = sum(len(i.encode()) + 1 for i in original.ids)
  assert os.path.getsize(path) < count * -(-num_bits // 8) + ids_bytes + 600


def test_damaged_files_are_rejected(tmp_path):
  path = tmp_path / "photos.idx"
  index.save(path, _example())
  good = path.read_bytes()
  cases = {
    "truncated": good[:-5],
    "trailing bytes": good + b"\0",
    "SHA-256": good[:-40] + bytes([good[-40] ^ 1]) + good[-39:],  # one flipped bit in the ids
    "not a hashing index": b"PK\x03\x04" + good[4:],
    "header cut short": good[:30],
    "format version 2": good[:8] + struct.pack("<I", 2) + good[12:],
  }
  for message, data in cases.items():
    path.write_bytes(data)
    with pytest.raises(UserError, match=message):
      index.load(path)
  path.write_bytes(b"")
  with pytest.raises(UserError, match="not a hashing index"):
    index.load(path)


def test_corrupt_headers_and_payloads_are_rejected(tmp_path):
  path = tmp_path / "bad.idx"
  payload = bytes([0b10100000, 0b00010000]) + b"a\0"  # one 12-bit code, id "a"
  path.write_bytes(_raw(_header(), payload))
  assert index.load(path).ids == ("a",)  # the hand-made file itself is valid
  cases = {
    "bits set past num_bits": (_header(), bytes([0, 0b00001000]) + b"a\0"),
    "header field 'count'": (_header(count=-1), payload),
    "header field 'model_hash'": (_header(model_hash=None), payload),
    "2 bytes per code for 20 bits": (_header(num_bits=20), payload),
    "not NUL-terminated": (_header(), payload[:-1] + b"b"),
    "2 ids for 1 codes": (_header(ids_bytes=4), payload + b"b\0"),
    "ids are not UTF-8": (_header(), payload[:2] + b"\xff\0"),
  }
  for message, (header, data) in cases.items():
    path.write_bytes(_raw(header, data))
    with pytest.raises(UserError, match=message):
      index.load(path)
  path.write_bytes(index.MAGIC + struct.pack("<II", 1, 3) + b"{x}")
  with pytest.raises(UserError, match="unreadable header"):
    index.load(path)


def test_mismatched_index_is_rejected(tmp_path):
  path = tmp_path / "photos.idx"
  index.save(path, _example(20))
  with pytest.raises(UserError, match="holds 20-bit codes but the model makes 48-bit"):
    index.load(path, num_bits=48)
  with pytest.raises(UserError, match="another model"):
    index.load(path, model_hash="cd" * 32)
  with pytest.raises(UserError, match="cannot read index file"):
    index.load(tmp_path / "missing.idx")


def test_code_index_checks_its_arrays():
  codes = np.zeros((2, 2), np.uint8)
  with pytest.raises(ValueError, match="2 ids for 3 codes"):
    index.CodeIndex(np.zeros((3, 2), np.uint8), ("a", "b"), 16, "h")
  with pytest.raises(ValueError, match="do not hold"):
    index.CodeIndex(codes, ("a", "b"), 24, "h")
  with pytest.raises(ValueError, match="NUL"):
    index.CodeIndex(codes, ("a", "b\0"), 16, "h")
