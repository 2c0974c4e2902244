"""CNNH / CNNH+ end to end with the real config in smoke mode (stage 1 itself: test_two_stage)."""

import json

import numpy as np
import pytest
from conftest import load_config

from hashing import losses, search, train
from hashing.errors import UserError


@pytest.fixture(scope="module")
def cnnh_plus_run(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("cnnh-plus")
  [results] = train.train_and_evaluate(load_config("cnnh", "cnnh+,bits=16,smoke"), str(workdir))
  return workdir, results


def test_cnnh_plus_run_saves_stage1_codes_and_reports_them(cnnh_plus_run):
  workdir, results = cnnh_plus_run
  assert (results["method"], results["num_classes"]) == ("cnnh+", 10)
  split = np.load(workdir / "split.npz")
  stage1 = np.load(workdir / "stage1.npz")
  assert stage1["codes"].shape == (split["train"].size, 16)
  assert set(np.unique(stage1["codes"])) == {-1, 1}
  assert np.all(np.diff(stage1["objective"]) <= 1e-6 * stage1["objective"][0])
  assert results["stage1_objective"] == pytest.approx(
    stage1["objective"][-1] / (16 * split["train"].size) ** 2
  )
  assert 0 < results["map"] <= 1


def test_cnnh_plus_model_reloads_with_its_class_output(cnnh_plus_run):
  workdir, _ = cnnh_plus_run
  trained = search.TrainedModel.load(workdir)
  assert trained.model.num_classes == 10 and "classes" in trained.params["params"]
  images = np.zeros((2, *trained.image_shape), np.uint8)
  assert trained.encode(images).shape == (2, 2)


def test_stage1_codes_are_reused_from_the_workdir(tmp_path):
  config = load_config("cnnh", "bits=8,smoke")
  labels = np.eye(4, dtype=np.uint8)[np.arange(40) % 4]
  codes, info = train.stage1_targets(config, labels, str(tmp_path))
  # Same-class images get the same code on this separable problem.
  for c in range(4):
    assert len({tuple(row) for row in codes[c::4]}) == 1
  marker = -codes
  np.savez(
    tmp_path / "stage1.npz", codes=marker, objective=[1.0, 0.5], seconds=info["stage1_seconds"]
  )
  again, _ = train.stage1_targets(config, labels, str(tmp_path))
  np.testing.assert_array_equal(again, marker)


def test_cnnh_run_without_class_output(tmp_path):
  [results] = train.train_and_evaluate(load_config("cnnh", "bits=8,smoke"), str(tmp_path))
  assert (results["method"], results["num_classes"]) == ("cnnh", 0)
  assert json.load(open(tmp_path / "config.json"))["loss"]["class_weight"] == 0.0


def test_classification_loss_single_and_multi_label():
  logits = np.array([[2.0, 0.0, -1.0], [0.0, 1.0, 0.0]], np.float32)
  labels = np.array([[1, 0, 0], [0, 1, 1]], np.uint8)
  log_softmax = logits - np.log(np.exp(logits).sum(1, keepdims=True))
  single = -np.mean((labels[:1] * log_softmax[:1]).sum(1))
  got = losses.classification_loss(logits[:1], labels[:1], multi_label=False)
  np.testing.assert_allclose(got, single, rtol=1e-6)
  p = 1 / (1 + np.exp(-logits))
  multi = -np.mean(labels * np.log(p) + (1 - labels) * np.log(1 - p))
  got = losses.classification_loss(logits, labels, multi_label=True)
  np.testing.assert_allclose(got, multi, rtol=1e-5)
  # Label smoothing a: targets y (1 - a) + a / 3 (softmax over 3 classes), y (1 - a) + a / 2.
  a = 0.3
  target = labels[:1] * (1 - a) + a / 3
  got = losses.classification_loss(logits[:1], labels[:1], multi_label=False, smoothing=a)
  np.testing.assert_allclose(got, -np.mean((target * log_softmax[:1]).sum(1)), rtol=1e-6)
  target = labels * (1 - a) + a / 2
  want = -np.mean(target * np.log(p) + (1 - target) * np.log(1 - p))
  got = losses.classification_loss(logits, labels, multi_label=True, smoothing=a)
  np.testing.assert_allclose(got, want, rtol=1e-5)


def test_both_variants_is_a_user_error():
  with pytest.raises(UserError, match="cnnh"):
    load_config("cnnh", "cnnh,cnnh+")
