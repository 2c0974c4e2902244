"""Evaluation protocols: seeded train / query / database splits of a pooled dataset.

A protocol turns the named splits of a source (`data.load_source`) into three index arrays
over the pooled dataset (`data.pool`: train, then test, then all). Splits are drawn with a
seeded permutation (never "the first N rows": CIFAR-10 shards are grouped by class), checked
disjoint where they must be, and saved with the run (`split.npz`).

| name                     | query             | train                    | database          |
| ------------------------ | ----------------- | ------------------------ | ----------------- |
| `cifar10-dnnh`           | 100 per class     | 500 per class, non-query | all non-query     |
| `fashion-mnist-embedded` | 100 per class     | 500 per class, non-query | all non-query     |
| `nuswide-21`             | 100 per class     | 500 per class, non-query | all non-query     |
| `cifar10-dsh`            | official test     | official train           | train (or query)  |
| `per-class`              | `query_per_class` | `train_per_class`        | non-query         |

`database="query"` gives the DSH paper's own script's variant (query set = database).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from hashing.errors import UserError

PER_CLASS_PRESETS = {
  "cifar10-dnnh": dict(query_per_class=100, train_per_class=500, train_from_database=True),
  "fashion-mnist-embedded": dict(
    query_per_class=100, train_per_class=500, train_from_database=True
  ),
  "nuswide-21": dict(query_per_class=100, train_per_class=500, train_from_database=True),
}
OFFICIAL_SPLIT = ("cifar10-dsh",)
PROTOCOLS = (*PER_CLASS_PRESETS, *OFFICIAL_SPLIT, "per-class")
DATABASE_CHOICES = ("rest", "train", "query")


@dataclasses.dataclass(frozen=True)
class Split:
  """Index arrays (int64) into the pooled dataset: `train` and `query` sorted, `database` in a
  seeded random order (its order is the tie-break order of the ranking)."""

  train: np.ndarray
  query: np.ndarray
  database: np.ndarray

  def check(self, database_is_query: bool = False) -> None:
    """Raises if query overlaps train, or query overlaps the database (unless it is the query)."""
    if np.intersect1d(self.query, self.train).size:
      raise AssertionError("query and train splits overlap")
    if not database_is_query and np.intersect1d(self.query, self.database).size:
      raise AssertionError("query and database splits overlap")

  def arrays(self) -> dict[str, np.ndarray]:
    return {"train": self.train, "query": self.query, "database": self.database}


def sample_per_class(
  labels: np.ndarray, per_class: int, available: np.ndarray, rng: np.random.Generator, what: str
) -> np.ndarray:
  """Draws `per_class` images of each class from the `available` ones (bool `[N]`).

  Multi-label aware: classes are visited in order and an image drawn for one class is not
  drawn again, so each class gets exactly `per_class` images carrying its label.
  Returns sorted int64 indices.
  """
  order = rng.permutation(labels.shape[0])
  taken = np.zeros(labels.shape[0], dtype=bool)
  for c in range(labels.shape[1]):
    candidates = order[(labels[order, c] > 0) & available[order] & ~taken[order]]
    if candidates.size < per_class:
      raise UserError(
        f"the protocol asks for {per_class} {what} images of class {c}, but only "
        f"{candidates.size} are left; lower config.data.{what}_per_class or use more data."
      )
    taken[candidates[:per_class]] = True
  return np.flatnonzero(taken)


def make_split(
  protocol: str,
  labels: np.ndarray,
  offsets: dict[str, tuple[int, int]],
  *,
  seed: int,
  query_per_class: int | None = None,
  train_per_class: int | None = None,
  train_from_database: bool | None = None,
  database: str | None = None,
  database_limit: int = 0,
) -> Split:
  """Splits a pooled dataset according to `protocol`.

  Args:
    protocol: one of `PROTOCOLS`.
    labels: multi-hot `[N, L]` labels of the pooled dataset.
    offsets: `data.pool_offsets` of the source: split name -> [start, stop) in the pool.
    seed: seeds the permutation; the same seed gives the same split.
    query_per_class, train_per_class, train_from_database: override the preset (required for
      `per-class`).
    database: "rest" (all non-query images; per-class default), "train" (the official train
      split; `cifar10-dsh` default) or "query" (the query set itself, as the DSH paper's own
      script evaluated).
    database_limit: if > 0, keep a seeded random subset of this many database images (smoke
      runs only: it changes the protocol).

  Returns:
    The checked `Split`.
  """
  if protocol not in PROTOCOLS:
    raise UserError(f"config.data.protocol={protocol!r} is unknown; choose one of {PROTOCOLS}.")
  if database is not None and database not in DATABASE_CHOICES:
    raise UserError(f"config.data.database={database!r} must be one of {DATABASE_CHOICES}.")
  rng = np.random.default_rng(seed)
  n = labels.shape[0]
  if protocol in OFFICIAL_SPLIT:
    if "train" not in offsets or "test" not in offsets:
      raise UserError(
        f"protocol {protocol!r} needs a source with official train and test splits "
        f"(e.g. npz:<dir> with train*.npz and test*.npz); this source has {sorted(offsets)}."
      )
    train = np.arange(*offsets["train"])
    query = np.arange(*offsets["test"])
    database = database or "train"
    if database == "rest":
      database = "train"  # the official protocol's "rest" is the train split
    db = query if database == "query" else train
  else:
    preset = dict(PER_CLASS_PRESETS.get(protocol, {}))
    for key, value in (
      ("query_per_class", query_per_class),
      ("train_per_class", train_per_class),
      ("train_from_database", train_from_database),
    ):
      if value is not None:
        preset[key] = value
      if key not in preset:
        raise UserError(f"protocol 'per-class' needs config.data.{key} to be set.")
    for key in ("query_per_class", "train_per_class"):
      if preset[key] <= 0:
        raise UserError(f"config.data.{key}={preset[key]} must be positive.")
    query = sample_per_class(labels, preset["query_per_class"], np.ones(n, bool), rng, "query")
    rest = np.ones(n, dtype=bool)
    rest[query] = False
    train = sample_per_class(labels, preset["train_per_class"], rest, rng, "train")
    database = database or "rest"
    if database == "query":
      db = query
    elif database == "train":
      db = train
    else:
      if not preset["train_from_database"]:
        rest[train] = False
      db = np.flatnonzero(rest)
  if database_limit and database_limit < db.size:
    db = rng.choice(db, size=database_limit, replace=False)
  # Ranking breaks Hamming-distance ties by database position. Pooled rows can be grouped by
  # class (the CIFAR-10 shards are), so a sorted database would order every tie by class and
  # bias mAP and precision@k; a seeded permutation makes the tie order unrelated to the labels.
  db = rng.permutation(db)
  split = Split(
    train=train.astype(np.int64), query=query.astype(np.int64), database=db.astype(np.int64)
  )
  split.check(database_is_query=database == "query")
  return split
