import json
import os

import numpy as np
import pytest

from hashing import io as hio


def test_atomic_writes_round_trip(tmp_path):
  hio.write_json(tmp_path / "a.json", {"map": 0.5})
  hio.write_npz(tmp_path / "b.npz", x=np.arange(3))
  hio.append_jsonl(tmp_path / "c.jsonl", {"step": 1})
  hio.append_jsonl(tmp_path / "c.jsonl", {"step": 2})
  assert json.load(open(tmp_path / "a.json")) == {"map": 0.5}
  np.testing.assert_array_equal(np.load(tmp_path / "b.npz")["x"], np.arange(3))
  assert [json.loads(line)["step"] for line in open(tmp_path / "c.jsonl")] == [1, 2]


def test_failed_write_keeps_old_file_and_leaves_no_temporary(tmp_path):
  path = tmp_path / "results.json"
  hio.write_json(path, {"old": True})
  with pytest.raises(TypeError):
    hio.write_json(path, {"bad": object()})  # not JSON-serialisable: fails mid-write
  assert json.load(open(path)) == {"old": True}
  assert os.listdir(tmp_path) == ["results.json"]
