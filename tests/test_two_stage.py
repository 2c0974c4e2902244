import numpy as np
import pytest

from hashing import two_stage
from hashing.errors import UserError


def explicit_similarity(labels):
  """The `[n, n]` S of the definition: 1 where two images share a label, else -1."""
  labels = np.asarray(labels, np.int64)
  return np.where(labels @ labels.T > 0, 1.0, -1.0)


def brute_objective(labels, h):
  q = h.shape[1]
  return float(((q * explicit_similarity(labels) - h @ h.T) ** 2).sum())


def descend_reference(labels, h0, sweeps):
  """The algorithm written out on the explicit S, in float64: entries row by row, each moved by
  the clipped Newton step (or to the downhill edge where f'' <= 0), kept only if the brute-force
  f does not increase."""
  s = explicit_similarity(labels)
  h = np.array(h0, np.float64)
  n, q = h.shape
  f = lambda h: ((q * s - h @ h.T) ** 2).sum()
  history = [f(h)]
  for _ in range(sweeps):
    for i in range(n):
      for j in range(q):
        r = q * s - h @ h.T
        f1 = -4 * (r @ h[:, j])[i]
        f2 = 4 * (h[:, j] @ h[:, j] + h[i, j] ** 2 - r[i, i])
        lo, hi = -1 - h[i, j], 1 - h[i, j]
        d = np.clip(-f1 / f2, lo, hi) if f2 > 0 else (hi if f1 < 0 else lo)
        trial = h.copy()
        trial[i, j] += d
        if f(trial) <= f(h):
          h = trial
    history.append(f(h))
  return h, np.array(history)


def random_labels(rng, n, num_labels=4, p=0.4):
  """Multi-hot labels, every image with at least one label."""
  labels = (rng.random((n, num_labels)) < p).astype(np.uint8)
  labels[np.arange(n), rng.integers(0, num_labels, n)] = 1
  return labels


def reference_case(name):
  """(labels, h0) of a small problem; the last two reach the branches random starts miss."""
  if name.startswith("random"):
    rng = np.random.default_rng(int(name[-1]))
    return random_labels(rng, 12), rng.uniform(-1, 1, (12, 4))
  if name == "zero start":  # f'' < 0 at H = 0: steps go to the downhill edge of the box
    return random_labels(np.random.default_rng(5), 12), np.zeros((12, 4))
  # First entry: f'' = 0.2, b = 0.025, so Newton's d = 0.5 would raise f by 0.0375: rejected.
  a = (0.025 + np.sqrt(2 * 1.05 - 0.025**2)) / 2  # a - c = 0.025, a^2 + c^2 = 1.05
  return np.array([[1, 0], [1, 0], [0, 1]]), np.array([[0.0], [a], [a - 0.025]])


@pytest.mark.parametrize("case", ["random 0", "random 1", "random 2", "zero start", "guard"])
def test_descend_matches_numpy_reference(case):
  labels, h0 = reference_case(case)
  h0 = h0.astype(np.float32)
  h, history = two_stage.descend(labels, h0, sweeps=4)
  ref_h, ref_history = descend_reference(labels, h0, sweeps=4)
  np.testing.assert_allclose(h, ref_h, atol=1e-4)
  np.testing.assert_array_equal(two_stage.sign_codes(h), two_stage.sign_codes(ref_h))
  np.testing.assert_allclose(history, ref_history, rtol=1e-5, atol=1e-6 * ref_history[0])
  assert np.all(np.diff(history) <= 0)


def test_newton_update_guard_and_concave_branch():
  # The "guard" case's first entry: the Newton step would raise f, so the entry stays.
  assert float(two_stage.newton_update(0.0, 0.025, 1.05, 1.0)) == 0.0
  # Same curvature, smaller gradient: Newton's step d = 20 b is taken.
  np.testing.assert_allclose(two_stage.newton_update(0.0, 0.01, 1.05, 1.0), 0.2, rtol=1e-6)
  # f'' = 4 (0.1 + 0.25 - 1) < 0: straight to the edge on the downhill side (sign of b).
  assert float(two_stage.newton_update(0.5, 0.1, 0.1, 1.0)) == 1.0
  assert float(two_stage.newton_update(0.5, -0.1, 0.1, 1.0)) == -1.0


def test_objective_and_groups_match_brute_force_on_multi_label_data():
  rng = np.random.default_rng(3)
  labels = random_labels(rng, 40, num_labels=6, p=0.3)
  group_of, table = two_stage.similarity_groups(labels)
  np.testing.assert_array_equal(table[group_of][:, group_of], explicit_similarity(labels))
  for q in (1, 6):
    h = rng.uniform(-1, 1, (40, q))
    np.testing.assert_allclose(
      two_stage.objective(labels, h), brute_objective(labels, h), rtol=1e-12
    )


def test_objective_history_is_non_increasing_and_seeded():
  rng = np.random.default_rng(4)
  labels = random_labels(rng, 300, num_labels=8, p=0.2)
  codes, history = two_stage.stage1_codes(labels, 16, sweeps=6, seed=7)
  assert codes.dtype == np.int8 and codes.shape == (300, 16)
  assert set(np.unique(codes)) <= {-1, 1}
  assert history.shape == (7,)
  assert np.all(np.diff(history) <= 0), np.diff(history)
  assert history[-1] < 0.9 * history[0]
  again, again_history = two_stage.stage1_codes(labels, 16, sweeps=6, seed=7)
  np.testing.assert_array_equal(codes, again)
  np.testing.assert_array_equal(history, again_history)


def test_separable_classes_get_one_code_each_and_reproduce_s():
  labels = np.repeat(np.eye(4, dtype=np.uint8), 10, axis=0)  # 4 classes of 10 images
  codes, _ = two_stage.stage1_codes(labels, 8, sweeps=10, seed=0)
  for c in range(4):
    assert len(np.unique(codes[10 * c : 10 * (c + 1)], axis=0)) == 1
  inner = codes.astype(np.int64) @ codes.T.astype(np.int64)
  np.testing.assert_array_equal(np.sign(inner), explicit_similarity(labels))


def test_sign_codes_maps_zero_to_plus_one():
  codes = two_stage.sign_codes(np.array([[0.0, -0.0, 0.25, -0.25]]))
  np.testing.assert_array_equal(codes, [[1, 1, 1, -1]])
  assert codes.dtype == np.int8


@pytest.mark.parametrize(
  "labels, kwargs, message",
  [
    (np.eye(3), {"bits": 0}, "bits=0"),
    (np.eye(3), {"bits": 2.5}, "bits=2.5"),
    (np.zeros((0, 3)), {}, "shape"),
    (np.array([0, 1, 1]), {}, "shape"),
    (np.array([[2, 0], [0, 1]]), {}, "multi-hot"),
    (np.array([[1, 0], [0, 0]]), {}, "no label"),
    (np.eye(3), {"sweeps": -1}, "sweeps=-1"),
  ],
)
def test_bad_input_raises_user_error(labels, kwargs, message):
  with pytest.raises(UserError, match=message):
    two_stage.stage1_codes(labels, **{"bits": 4, "sweeps": 1, "seed": 0, **kwargs})


def test_bad_start_and_too_many_groups_raise_user_error(monkeypatch):
  labels = np.eye(3)
  with pytest.raises(UserError, match="shape"):
    two_stage.descend(labels, np.zeros((2, 4)), sweeps=1)
  with pytest.raises(UserError, match=r"\[-1, 1\]"):
    two_stage.descend(labels, np.full((3, 4), 1.5), sweeps=1)
  monkeypatch.setattr(two_stage, "MAX_GROUPS", 2)
  with pytest.raises(UserError, match="3 distinct label sets"):
    two_stage.similarity_groups(labels)
