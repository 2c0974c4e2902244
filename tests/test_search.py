"""End to end: a smoke-trained DSH run encodes a folder of PNGs into an index file, which is
queried through the library API and the command line (hashing.search, hashing.search_cli)."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT, load_config
from PIL import Image

from hashing import data, index, metrics, models, search, search_cli, train
from hashing.errors import UserError


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  """(trained workdir, image folder, uint8 images [20, 28, 28, 1] in id order, ids)."""
  workdir = str(tmp_path_factory.mktemp("dsh"))
  train.train_and_evaluate(load_config("dsh", "bits=16,smoke"), workdir)
  folder = tmp_path_factory.mktemp("images")
  pooled = data.load_source("embedded")["all"]
  classes = pooled.labels.argmax(axis=1)
  chosen = [int(np.flatnonzero(classes == c)[i]) for c in range(10) for i in range(2)]
  ids = []
  for j in chosen:
    rel = f"class{classes[j]}/image{j:05d}.png"
    os.makedirs(folder / f"class{classes[j]}", exist_ok=True)
    Image.fromarray(pooled.images[j, :, :, 0], mode="L").save(folder / rel)
    ids.append(rel)
  order = np.argsort(ids)  # the index lists files in sorted path order
  return workdir, folder, pooled.images[chosen][order], [ids[i] for i in order]


def _ref_ranking(query_code: np.ndarray, codes: np.ndarray) -> list[tuple[int, int]]:
  """(distance, index) pairs of every code, sorted: the ranking by definition."""
  bits = np.unpackbits(codes, axis=1)
  query_bits = np.unpackbits(query_code)
  return sorted((int((row != query_bits).sum()), j) for j, row in enumerate(bits))


def test_index_holds_the_training_codes_of_the_folder_images(run):
  workdir, folder, images, ids = run
  model = search.TrainedModel.load(workdir)
  assert (model.num_bits, model.image_shape) == (16, (28, 28, 1))
  code_index = search.build_index(model, folder, batch_size=7)  # several batches, a partial one
  assert list(code_index.ids) == ids
  # The same codes as the training code's encoder gives the same (lossless PNG) images.
  expected = metrics.pack_codes(models.encode(model.model, model.params, images, batch_size=5))
  np.testing.assert_array_equal(code_index.codes, expected)
  assert code_index.metadata["root"] == str(folder.resolve())


def test_library_search_matches_reference_ranking(run):
  workdir, folder, _, ids = run
  model = search.TrainedModel.load(workdir)
  code_index = search.build_index(model, folder)
  queries = [folder / ids[3], folder / ids[12]]
  results = search.search(code_index, model, queries, top=5)
  query_codes = model.encode_files(queries)
  for (got_ids, got_dist), query_code in zip(results, query_codes, strict=True):
    expected = _ref_ranking(query_code, code_index.codes)[:5]
    assert got_ids == [ids[j] for _, j in expected]
    assert got_dist.tolist() == [d for d, _ in expected]
    assert got_dist[0] == 0  # an indexed image finds itself (or a tie before it) at distance 0
  within = search.search(code_index, model, queries[:1], radius=2)
  expected = [(d, j) for d, j in _ref_ranking(query_codes[0], code_index.codes) if d <= 2]
  assert within[0][0] == [ids[j] for _, j in expected]


def test_command_line_index_query_and_grid(run, tmp_path):
  workdir, folder, _, ids = run
  out = tmp_path / "fashion.idx"
  command = [sys.executable, "-m", "hashing.search_cli"]
  done = subprocess.run(
    [*command, "index", f"--workdir={workdir}", f"--images={folder}", f"--out={out}"],
    capture_output=True,
    text=True,
    cwd=ROOT,
  )
  assert done.returncode == 0, done.stderr
  assert "indexed 20 images (16-bit codes)" in done.stdout
  code_index = index.load(out)
  assert list(code_index.ids) == ids
  grid = tmp_path / "grid.png"
  queries = [str(folder / ids[5]), str(folder / ids[17])]
  done = subprocess.run(
    [*command, "query", f"--index={out}", f"--workdir={workdir}", *queries, f"--grid={grid}"],
    capture_output=True,
    text=True,
    cwd=ROOT,
  )
  assert done.returncode == 0, done.stderr
  blocks = done.stdout.split("query ")[1:]
  assert len(blocks) == 2
  model = search.TrainedModel.load(workdir)
  for block, query, query_code in zip(blocks, queries, model.encode_files(queries), strict=True):
    lines = block.strip().splitlines()
    assert lines[0] == f"{query}: 10 results"
    printed = [line.split() for line in lines[1:11]]
    expected = _ref_ranking(query_code, code_index.codes)[:10]
    assert printed == [[str(r), str(d), ids[j]] for r, (d, j) in enumerate(expected, start=1)]
    assert printed[0][1] == "0"
  assert done.stdout.strip().endswith(f"grid of the queries and their first 10 results in {grid}")
  with Image.open(grid) as image:
    assert image.format == "PNG"
    assert image.size == (96 * 11 + 8, (96 + 14) * 2)  # query + top 10 per row, 2 rows


def test_query_with_another_model_is_refused(run, tmp_path, capsys):
  workdir, folder, _, ids = run
  model = search.TrainedModel.load(workdir)
  code_index = search.build_index(model, folder)
  other = index.CodeIndex(
    code_index.codes, code_index.ids, code_index.num_bits, "0" * 64, code_index.metadata
  )
  path = tmp_path / "other.idx"
  index.save(path, other)
  status = search_cli.main(
    ["query", f"--index={path}", f"--workdir={workdir}", str(folder / ids[0])]
  )
  assert status == 2
  assert "was built with another model" in capsys.readouterr().err
  with pytest.raises(UserError, match="another model"):
    search.search(other, model, [folder / ids[0]])


def test_user_mistakes_give_one_clear_error(run, tmp_path, capsys):
  workdir, folder, _, _ = run
  with pytest.raises(UserError, match="has no config.json, results.json, params.msgpack"):
    search.TrainedModel.load(tmp_path)
  (tmp_path / "bits-16").mkdir()
  with pytest.raises(UserError, match="several bit lengths.*bits-16"):
    search.TrainedModel.load(tmp_path)
  with pytest.raises(UserError, match="do not fit|does not fit"):
    search.TrainedModel.load(workdir, image_shape=(32, 32, 3))
  with pytest.raises(UserError, match="holds no PNG or JPEG"):
    search.list_images(tmp_path)
  (tmp_path / "broken.png").write_bytes(b"not an image")
  with pytest.raises(UserError, match="cannot read image"):
    search.read_image(tmp_path / "broken.png", (28, 28, 1))
  status = search_cli.main(
    ["index", f"--workdir={workdir}", f"--images={tmp_path / 'none'}", "--out=x.idx"]
  )
  assert status == 2
  assert capsys.readouterr().err.startswith("error: ")


def test_read_image_converts_channels_and_size(tmp_path):
  rgb = np.zeros((10, 20, 3), np.uint8)
  rgb[..., 0] = 200  # pure red
  Image.fromarray(rgb).save(tmp_path / "red.png")
  grey = search.read_image(tmp_path / "red.png", (5, 10, 1))
  assert grey.shape == (5, 10, 1)
  # PIL's luma: L = R * 299/1000 + G * 587/1000 + B * 114/1000.
  assert np.all(grey == round(200 * 0.299))
  colour = search.read_image(tmp_path / "red.png", (4, 4, 3))
  assert colour.shape == (4, 4, 3) and np.all(colour == [200, 0, 0])
