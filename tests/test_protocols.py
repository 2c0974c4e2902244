import numpy as np
import pytest
from conftest import CIFAR10_DIR, needs_cifar10

from hashing import data, protocols
from hashing.errors import UserError


def one_hot(classes, num_classes):
  return np.eye(num_classes, dtype=np.uint8)[classes]


def grouped_labels(per_class=60, num_classes=4):
  """Rows grouped by class, like the CIFAR-10 shards: a split must not take 'the first N'."""
  return one_hot(np.repeat(np.arange(num_classes), per_class), num_classes)


def test_per_class_protocol_counts_disjointness_and_database():
  labels = grouped_labels()
  split = protocols.make_split(
    "per-class",
    labels,
    {"all": (0, 240)},
    seed=0,
    query_per_class=5,
    train_per_class=20,
    train_from_database=True,
  )
  np.testing.assert_array_equal(labels[split.query].sum(0), [5] * 4)
  np.testing.assert_array_equal(labels[split.train].sum(0), [20] * 4)
  assert np.intersect1d(split.query, split.train).size == 0
  # Database = every non-query image, the training images included.
  np.testing.assert_array_equal(np.sort(split.database), np.setdiff1d(np.arange(240), split.query))
  # In a seeded random order: ties of the ranking must not be broken by class.
  assert not np.array_equal(split.database, np.sort(split.database))
  assert np.isin(split.train, split.database).all()
  # Not the first rows of each class: a seeded permutation.
  assert not np.array_equal(split.query[:5], np.arange(5))


def test_train_outside_database_when_asked():
  labels = grouped_labels()
  split = protocols.make_split(
    "per-class",
    labels,
    {"all": (0, 240)},
    seed=0,
    query_per_class=5,
    train_per_class=20,
    train_from_database=False,
  )
  assert split.database.size == 240 - 20 - 80
  assert np.intersect1d(split.train, split.database).size == 0


def test_split_is_seeded():
  labels = grouped_labels()
  make = lambda seed: protocols.make_split(
    "fashion-mnist-embedded",
    labels,
    {"all": (0, 240)},
    seed=seed,
    query_per_class=5,
    train_per_class=10,
  )
  np.testing.assert_array_equal(make(3).query, make(3).query)
  assert not np.array_equal(make(3).query, make(4).query)


def test_multi_label_sampling_gives_each_class_its_count():
  rng = np.random.default_rng(0)
  labels = (rng.random((400, 5)) < 0.3).astype(np.uint8)
  split = protocols.make_split(
    "per-class",
    labels,
    {"all": (0, 400)},
    seed=1,
    query_per_class=6,
    train_per_class=12,
    train_from_database=True,
  )
  assert len(set(split.query.tolist())) == split.query.size <= 30
  assert (labels[split.query].sum(0) >= 6).all()
  assert (labels[split.train].sum(0) >= 12).all()
  assert np.intersect1d(split.query, split.train).size == 0


def test_official_split_and_database_equals_query_variant():
  labels = grouped_labels(per_class=10)
  offsets = {"train": (0, 30), "test": (30, 40)}
  split = protocols.make_split("cifar10-dsh", labels, offsets, seed=0)
  np.testing.assert_array_equal(split.query, np.arange(30, 40))
  np.testing.assert_array_equal(split.train, np.arange(30))
  np.testing.assert_array_equal(np.sort(split.database), np.arange(30))
  variant = protocols.make_split("cifar10-dsh", labels, offsets, seed=0, database="query")
  np.testing.assert_array_equal(np.sort(variant.database), variant.query)


@pytest.mark.parametrize(
  "protocol, offsets, kwargs, message",
  [
    (
      "per-class",
      {"all": (0, 240)},
      dict(query_per_class=50, train_per_class=20, train_from_database=True),
      "only 10 are left",
    ),
    ("per-class", {"all": (0, 240)}, dict(query_per_class=5), "train_per_class"),
    ("cifar10-dsh", {"all": (0, 240)}, {}, "official train and test"),
    ("imagenet-sota", {"all": (0, 240)}, {}, "unknown"),
    (
      "per-class",
      {"all": (0, 240)},
      dict(query_per_class=0, train_per_class=1, train_from_database=True),
      "positive",
    ),
    ("cifar10-dnnh", {"all": (0, 240)}, dict(database="everything"), "database"),
  ],
)
def test_bad_protocol_requests_are_user_errors(protocol, offsets, kwargs, message):
  with pytest.raises(UserError, match=message):
    protocols.make_split(protocol, grouped_labels(), offsets, seed=0, **kwargs)


@needs_cifar10
def test_cifar10_protocols_on_the_real_shards():
  splits = data.load_source(f"npz:{CIFAR10_DIR}")
  pooled, offsets = data.pool(splits), data.pool_offsets(splits)
  dnnh = protocols.make_split("cifar10-dnnh", pooled.labels, offsets, seed=0)
  assert (dnnh.query.size, dnnh.train.size, dnnh.database.size) == (1000, 5000, 59000)
  np.testing.assert_array_equal(pooled.labels[dnnh.query].sum(0), [100] * 10)
  np.testing.assert_array_equal(pooled.labels[dnnh.train].sum(0), [500] * 10)
  dsh = protocols.make_split("cifar10-dsh", pooled.labels, offsets, seed=0)
  assert (dsh.query.size, dsh.train.size, dsh.database.size) == (10000, 50000, 50000)
