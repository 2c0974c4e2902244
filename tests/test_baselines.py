"""LSH and ITQ: the fits themselves on synthetic features, and smoke runs of configs/baselines.py
through train.train_and_evaluate on the embedded Fashion-MNIST data (pixels and the backbone
features of a DSH run)."""

import json
import os

import numpy as np
import pytest
from conftest import load_config

from hashing import baselines, metrics, models, train
from hashing.errors import UserError


def clustered(rng, n, *, classes=10, dims=256, subspace=6, spread=3.0, noise=0.5):
  """Features `[n, dims]` whose classes differ only in a `subspace`-dimensional subspace (class
  means of norm ~ spread * sqrt(subspace)), plus isotropic noise; labels one-hot `[n, classes]`."""
  basis = np.linalg.qr(np.random.default_rng(123).standard_normal((dims, subspace)))[0]
  centres = np.random.default_rng(321).standard_normal((classes, subspace)) * spread
  y = rng.integers(0, classes, n)
  x = centres[y] @ basis.T + noise * rng.standard_normal((n, dims))
  return x.astype(np.float32), np.eye(classes, dtype=np.uint8)[y]


def test_itq_loss_never_increases_and_rotation_is_orthogonal():
  rng = np.random.default_rng(0)
  v = rng.standard_normal((400, 16)) * np.linspace(3, 0.5, 16)  # anisotropic, as after PCA
  rotation, loss = baselines.itq_rotation(v, 50, rng)
  assert loss.shape == (51,)
  assert np.all(np.diff(loss) <= 1e-9 * loss[0])
  assert loss[-1] < 0.95 * loss[0]  # it actually learns a better rotation than the random start
  np.testing.assert_allclose(rotation.T @ rotation, np.eye(16), atol=1e-10)
  # The reported loss is that of the returned rotation.
  z = v @ rotation
  assert loss[-1] == pytest.approx(np.square(np.where(z > 0, 1.0, -1.0) - z).sum())


def test_itq_projection_is_pca_times_rotation():
  x, _ = clustered(np.random.default_rng(1), 500, dims=32)
  hasher, loss = baselines.fit_itq(x, 8, seed=0, iterations=10)
  assert loss.shape == (11,) and np.all(np.diff(loss) <= 1e-9 * loss[0])
  # W [d, q] orthonormal and R orthogonal: P = W R has orthonormal columns too.
  np.testing.assert_allclose(hasher.projection.T @ hasher.projection, np.eye(8), atol=1e-10)
  np.testing.assert_allclose(hasher.mean, x.mean(axis=0, dtype=np.float64), atol=1e-6)
  # Codes are centred: about half of each bit's training codes are positive (ITQ balances bits).
  assert np.all(np.abs((hasher(x) > 0).mean(axis=0) - 0.5) < 0.35)


def test_itq_beats_lsh_on_low_dimensional_class_structure():
  rng = np.random.default_rng(2)
  train_x, _ = clustered(rng, 1000)
  query_x, query_y = clustered(rng, 200)
  database_x, database_y = clustered(rng, 2000)
  found = {}
  for method in baselines.METHODS:
    hasher, _ = baselines.fit(method, train_x, 16, seed=0)
    found[method] = metrics.evaluate(
      metrics.pack_codes(hasher(query_x)),
      metrics.pack_codes(hasher(database_x)),
      query_y,
      database_y,
      num_bits=16,
    )["map"]
  # PCA finds the 6 class dimensions among 256; random hyperplanes mostly cut noise.
  assert found["itq"] > found["lsh"] + 0.2, found
  assert found["lsh"] > 0.1, found  # but even LSH beats a random ranking


@pytest.mark.parametrize("method", baselines.METHODS)
def test_codes_are_deterministic_per_seed(method):
  x, _ = clustered(np.random.default_rng(3), 300, dims=40)
  codes = [baselines.fit(method, x, 12, seed=seed)[0](x) for seed in (0, 0, 1)]
  np.testing.assert_array_equal(codes[0], codes[1])
  assert not np.array_equal(metrics.pack_codes(codes[0]), metrics.pack_codes(codes[2]))


def test_itq_refuses_more_bits_than_feature_dimensions():
  x, _ = clustered(np.random.default_rng(4), 100, dims=8, subspace=4)
  with pytest.raises(UserError, match="only 8; use bits <= 8"):
    baselines.fit_itq(x, 16, seed=0)
  baselines.fit_lsh(x, 16, seed=0)  # random hyperplanes have no such limit


def check_run(workdir, method, bits, features="pixels"):
  for name in (
    "config.json",
    "split.npz",
    "codes.npz",
    "results.json",
    "table.md",
    "pr_curve.png",
    "precision_at_k.png",
  ):
    assert os.path.getsize(os.path.join(workdir, name)) > 0, name
  with open(os.path.join(workdir, "results.json")) as f:
    results = json.load(f)
  for key in ("method", "protocol", "bits", "map", "map_at", "precision_radius2", "train_seconds"):
    assert key in results, key
  assert (results["method"], results["bits"], results["features"]) == (method, bits, features)
  assert results["protocol"] == "fashion-mnist-embedded"
  codes = np.load(os.path.join(workdir, "codes.npz"))
  assert codes["query_codes"].shape == (100, bits // 8) and codes["query_codes"].dtype == np.uint8
  assert codes["database_codes"].shape == (2000, bits // 8)
  again = metrics.evaluate(
    codes["query_codes"],
    codes["database_codes"],
    codes["query_labels"],
    codes["database_labels"],
    num_bits=bits,
  )
  assert again["map"] == pytest.approx(results["map"], abs=1e-12)
  return results


@pytest.mark.parametrize("method", baselines.METHODS)
def test_smoke_runs_like_a_deep_method(method, tmp_path):
  config = load_config("baselines", f"method={method},bits=8/16,smoke")
  results = train.train_and_evaluate(config, str(tmp_path))
  assert [r["bits"] for r in results] == [8, 16]
  for r in results:
    saved = check_run(tmp_path / f"bits-{r['bits']}", method, r["bits"])
    assert saved == json.loads(json.dumps(r))
    assert r["map"] > 0.1  # a random ranking gives the class frequency, 0.1
    if method == "itq":
      loss = r["quantization_loss"]
      assert len(loss) == 51 and np.all(np.diff(loss) <= 1e-9 * loss[0])
  assert (tmp_path / "table.md").read_text().count(f"| {method} |") == 2
  # A finished run is not fitted again: the same results (same fit time and date) come back.
  assert train.train_and_evaluate(config, str(tmp_path)) == results


def test_config_arguments():
  c = load_config("baselines")
  assert (c.method, c.bit_lengths, c.baseline.features, c.baseline.iterations) == (
    "itq",
    (12, 24, 32, 48),
    "pixels",
    50,
  )
  assert "train" not in c and "augment" not in c
  c = load_config("baselines", "method=lsh,features=model:runs/dsh/bits-48,data=cifar10-dnnh")
  assert (c.method, c.baseline.features, c.data.protocol) == (
    "lsh",
    "model:runs/dsh/bits-48",
    "cifar10-dnnh",
  )
  with pytest.raises(UserError, match="method='sh' is unknown"):
    load_config("baselines", "method=sh")


def test_unknown_features_are_a_user_error(tmp_path):
  config = load_config("baselines", "bits=8,smoke")
  config.baseline.features = "gist"
  with pytest.raises(UserError, match="'gist' is unknown; use 'pixels' or 'model:"):
    train.train_and_evaluate(config, str(tmp_path))


@pytest.fixture(scope="module")
def dsh_run(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("dsh"))
  train.train_and_evaluate(load_config("dsh", "bits=16,smoke"), workdir)
  return workdir


def test_model_features_are_the_backbone_output_the_head_sees(dsh_run):
  features, trained = baselines.model_features(dsh_run, batch_size=64)
  images = np.random.default_rng(5).integers(0, 256, (70, *trained.image_shape), dtype=np.uint8)
  x = features(images)
  assert x.shape == (70, 500) and x.dtype == np.float32 and (x >= 0).all()  # after a ReLU
  # The run's own hash head on these features gives the run's own codes: the normalisation and
  # backbone are the model's.
  params = trained.params["params"]
  codes = trained.model.head.apply({"params": params["head"]}, x)
  expected = models.encode(trained.model, trained.params, images, batch_size=64)
  np.testing.assert_allclose(codes, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("method", baselines.METHODS)
def test_smoke_run_on_model_features(dsh_run, method, tmp_path):
  config = load_config("baselines", f"method={method},bits=16,smoke,features=model:{dsh_run}")
  [results] = train.train_and_evaluate(config, str(tmp_path))
  check_run(tmp_path, method, 16, features=f"model:{dsh_run}")
  assert results["feature_dim"] == 500 and results["map"] > 0.1


def test_model_features_refuse_a_model_trained_on_the_queries(dsh_run, tmp_path):
  # Without smoke the protocol draws other queries, some of them among the DSH run's training
  # images.
  config = load_config("baselines", f"bits=16,features=model:{dsh_run}")
  with pytest.raises(UserError, match="leak"):
    train.train_and_evaluate(config, str(tmp_path))
