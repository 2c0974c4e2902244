"""Shallow hashing baselines, LSH and ITQ, fitted on fixed features and evaluated like a deep run.

Both are linear hashes of features x `[d]`: code = (x - m) P with P `[d, q]`, a bit is code > 0,
and m the mean of the training features (so that the hyperplanes pass through the data).
  * LSH, random hyperplanes (Charikar, STOC 2002): P ~ N(0, 1)^{d x q}, drawn from the seed.
  * ITQ, iterative quantization (Gong & Lazebnik, CVPR 2011 / TPAMI 2013): P = W R, W `[d, q]`
    the top-q principal directions of the centred training features X, and R `[q, q]` the
    rotation that (locally) minimises the quantization loss ||B - V R||_F^2 of V = X W over
    B in {-1, 1}^{n x q} and orthogonal R, by alternating B = sign(V R) and the orthogonal
    Procrustes solution for R (`itq_rotation`).

Features (`config.baseline.features`):
  * "pixels": the uint8 image flattened and scaled to [0, 1], d = H * W * C.
  * "model:<workdir>": the backbone output of a trained run (the features before its hash
    head, after the model's own input normalisation), e.g. model:runs/dsh/bits-48 (d = 500).

`fit_and_evaluate(config, workdir)` fits on the protocol's training images only, encodes query
and database, and writes config.json, split.npz, codes.npz, results.json, table.md and the
plots as a deep run does; `train.train_and_evaluate` calls it per bit length when
`config.method` is one of `METHODS`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable

import flax.linen as nn
import jax
import ml_collections
import numpy as np
import scipy.linalg

from hashing import data, models, protocols, search, train
from hashing import io as hio
from hashing.errors import UserError

METHODS = ("lsh", "itq")
Features = Callable[[np.ndarray], np.ndarray]  # uint8 images [n, H, W, C] -> float32 [n, d]
# Rows per float64 block when centring features: memory stays bounded for large training sets
# (50,000 x 3,072 pixels would be 1.2 GB in float64).
_ROWS = 4096


@dataclasses.dataclass(frozen=True)
class LinearHash:
  """A fitted linear hash: codes `[n, q]` = (features `[n, d]` - mean `[d]`) @ projection
  `[d, q]`; a bit is set where the code is > 0."""

  mean: np.ndarray
  projection: np.ndarray

  def __call__(self, features: np.ndarray) -> np.ndarray:
    blocks = [
      (features[s : s + _ROWS].astype(np.float64) - self.mean) @ self.projection
      for s in range(0, len(features), _ROWS)
    ]
    return np.concatenate(blocks) if blocks else np.zeros((0, self.projection.shape[1]))


def _check_features(features: np.ndarray, bits: int) -> None:
  if features.ndim != 2 or features.shape[0] < 2:
    raise UserError(
      f"the baselines fit on features [n, d] with n >= 2 training images; got shape "
      f"{features.shape}. Check the protocol's training split (config.data.train_per_class)."
    )
  if bits <= 0:
    raise UserError(f"config.model.bits={bits} must be a positive number of bits.")


def fit_lsh(features: np.ndarray, bits: int, *, seed: int) -> LinearHash:
  """LSH: mean of the training features `[n, d]` and a Gaussian projection `[d, bits]`."""
  _check_features(features, bits)
  projection = np.random.default_rng(seed).standard_normal((features.shape[1], bits))
  return LinearHash(features.mean(axis=0, dtype=np.float64), projection)


def pca(features: np.ndarray, dims: int) -> tuple[np.ndarray, np.ndarray]:
  """Mean `[d]` and the top-`dims` principal directions W `[d, dims]` (orthonormal columns, by
  decreasing variance) of features `[n, d]`, from the eigenvectors of sum_i (x_i - m)(x_i - m)^T.

  Raises:
    UserError: `dims` > d (there are only d directions).
  """
  n, d = features.shape
  if dims > d:
    raise UserError(
      f"ITQ projects the {d}-dimensional features onto {dims} principal directions, but there "
      f"are only {d}; use bits <= {d}, or features with more dimensions."
    )
  mean = features.mean(axis=0, dtype=np.float64)
  scatter = np.zeros((d, d))
  for start in range(0, n, _ROWS):
    centred = features[start : start + _ROWS].astype(np.float64) - mean
    scatter += centred.T @ centred
  # Only the top `dims` eigenpairs (ascending order from LAPACK): much faster than all d.
  _, vectors = scipy.linalg.eigh(scatter, subset_by_index=(d - dims, d - 1))
  directions = vectors[:, ::-1]
  # An eigenvector's sign is arbitrary; fixing it (largest-magnitude entry positive) keeps the
  # codes independent of the LAPACK build.
  largest = directions[np.abs(directions).argmax(axis=0), np.arange(dims)]
  return mean, directions * np.where(largest < 0, -1.0, 1.0)


def random_rotation(dims: int, rng: np.random.Generator) -> np.ndarray:
  """A random orthogonal matrix `[dims, dims]`: Q of the QR decomposition of a Gaussian matrix."""
  q, r = np.linalg.qr(rng.standard_normal((dims, dims)))
  return q * np.where(np.diag(r) < 0, -1.0, 1.0)  # sign fix: uniform (Haar) over rotations


def itq_rotation(
  v: np.ndarray, iterations: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
  """ITQ's rotation of PCA-projected centred features V `[n, q]`.

  From a random orthogonal R_0, each iteration sets B = sign(V R) (+1 where V R > 0, else -1),
  which minimises ||B - V R||_F^2 over B for fixed R, then R = W U^T with B^T V = U S W^T (SVD),
  which maximises tr(B^T V R) and so minimises the same loss over orthogonal R for fixed B.

  Returns:
    R `[q, q]` orthogonal, and the loss history `[iterations + 1]` float64:
    loss[t] = ||sign(V R_t) - V R_t||_F^2, non-increasing since each half-step minimises it.
  """
  v = np.asarray(v, np.float64)
  rotation = random_rotation(v.shape[1], rng)

  def quantize(rotation: np.ndarray) -> tuple[np.ndarray, float]:
    projected = v @ rotation
    b = np.where(projected > 0, 1.0, -1.0)
    return b, float(np.square(b - projected).sum())

  b, loss = quantize(rotation)
  history = [loss]
  for _ in range(iterations):
    u, _, wt = np.linalg.svd(b.T @ v)
    rotation = wt.T @ u.T
    b, loss = quantize(rotation)
    history.append(loss)
  return rotation, np.asarray(history)


def fit_itq(
  features: np.ndarray, bits: int, *, seed: int, iterations: int = 50
) -> tuple[LinearHash, np.ndarray]:
  """ITQ on training features `[n, d]`: PCA to `bits` dimensions, then `itq_rotation`.

  Returns the hash (projection = W R) and the quantization loss history `[iterations + 1]`.
  """
  _check_features(features, bits)
  if iterations < 0:
    raise UserError(f"config.baseline.iterations={iterations} must be >= 0 (0: PCA + rotation).")
  mean, directions = pca(features, bits)
  v = LinearHash(mean, directions)(features)  # [n, bits]: the centred features in PCA space
  rotation, history = itq_rotation(v, iterations, np.random.default_rng(seed))
  return LinearHash(mean, directions @ rotation), history


def fit(
  method: str, features: np.ndarray, bits: int, *, seed: int, iterations: int = 50
) -> tuple[LinearHash, dict]:
  """Fits `method` ("lsh" or "itq") on training features `[n, d]`; returns the hash and what
  `results.json` reports about the fit (ITQ: iterations and the quantization loss history)."""
  if method == "lsh":
    return fit_lsh(features, bits, seed=seed), {}
  if method == "itq":
    hasher, history = fit_itq(features, bits, seed=seed, iterations=iterations)
    return hasher, {"iterations": iterations, "quantization_loss": history.tolist()}
  raise UserError(f"baseline method {method!r} is unknown; choose one of {list(METHODS)}.")


def pixel_features(images: np.ndarray) -> np.ndarray:
  """uint8 images `[n, H, W, C]` -> float32 `[n, H * W * C]` in [0, 1]."""
  return images.reshape(len(images), -1).astype(np.float32) / 255.0


class _Identity(nn.Module):
  """A hash head that passes the backbone features through (no parameters)."""

  @nn.compact
  def __call__(self, features: jax.Array) -> jax.Array:
    return features


def model_features(workdir: str, batch_size: int = 1000) -> tuple[Features, search.TrainedModel]:
  """Backbone features of the trained run in `workdir` (`search.TrainedModel.load`).

  The run's HashNet with an identity head, no class output and no output activation computes
  exactly its backbone's input to the hash head, after the model's own input normalisation;
  `models.encode` runs it (compiled once, in fixed-size chunks). Returns the feature function
  (uint8 images `[n, H, W, C]` -> float32 `[n, d]`) and the loaded run.
  """
  trained = search.TrainedModel.load(workdir)
  network = trained.model.clone(head=_Identity(), output="none", quantize_eps=0.0, num_classes=0)
  params = {"params": {"backbone": trained.params["params"]["backbone"]}}
  return lambda images: models.encode(network, params, images, batch_size), trained


def _check_model_run(
  trained: search.TrainedModel,
  config: ml_collections.ConfigDict,
  pooled: data.LabeledImages,
  split: protocols.Split,
) -> None:
  """Refuses a feature model that cannot be used on this run's data without leaking queries."""
  where = f"features=model:{trained.workdir}"
  if trained.image_shape != pooled.images.shape[1:]:
    raise UserError(
      f"{where} takes images of shape {trained.image_shape}, this run's data has "
      f"{pooled.images.shape[1:]}; use a model trained on the same data."
    )
  # Its training images must be known not to include this run's queries: the same source gives
  # the same pooled indices, so its split.npz tells.
  with open(os.path.join(trained.workdir, "config.json")) as f:
    source = json.load(f)["data"]["source"]
  if source != config.data.source:
    raise UserError(
      f"{where} was trained on data.source={source!r}, this run uses {config.data.source!r}; "
      "use a model trained on the same data source (so that its training images can be "
      "checked against this run's queries)."
    )
  try:
    with np.load(os.path.join(trained.workdir, "split.npz")) as saved:
      leaked = np.intersect1d(saved["train"], split.query).size
  except (OSError, KeyError) as e:
    raise UserError(
      f"cannot read {trained.workdir}/split.npz ({e}); pass the workdir of a complete run."
    ) from None
  if leaked:
    raise UserError(
      f"{where} was trained on {leaked} of this run's query images, so its features would "
      "leak them; train the model with the same seed and data arguments (data=, smoke) as "
      "this run."
    )


def make_features(
  config: ml_collections.ConfigDict, pooled: data.LabeledImages, split: protocols.Split
) -> Features:
  """The feature function `config.baseline.features` names ("pixels" or "model:<workdir>")."""
  spec = config.baseline.features
  if spec == "pixels":
    return pixel_features
  kind, _, path = spec.partition(":")
  if kind != "model" or not path:
    raise UserError(
      f"config.baseline.features={spec!r} is unknown; use 'pixels' or 'model:<workdir of a "
      "trained run>' (one bit length: e.g. model:runs/dsh/bits-48)."
    )
  features, trained = model_features(path, config.eval.batch_size)
  _check_model_run(trained, config, pooled, split)
  return features


def fit_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """One baseline run of `config.model.bits` bits: fit on the training images, evaluate.

  Writes config.json, split.npz, codes.npz, results.json (`train_seconds`: computing the
  training features and fitting), table.md and the plots into `workdir`. A finished run (one
  with results.json) is not fitted again: its saved results are returned.
  """
  if config.method not in METHODS:
    raise UserError(f"config.method={config.method!r} is not a baseline; use one of {METHODS}.")
  train.claim_workdir(config, workdir)
  finished = train.finished_results(workdir)
  if finished is not None:
    return finished

  pooled, split = train.prepare_data(config)
  hio.write_npz(os.path.join(workdir, "split.npz"), **split.arrays())
  features = make_features(config, pooled, split)

  start = time.perf_counter()
  train_features = features(pooled.images[split.train])
  hasher, fit_info = fit(
    config.method,
    train_features,
    config.model.bits,
    seed=config.seed,
    iterations=config.baseline.iterations,
  )
  train_seconds = time.perf_counter() - start

  eval_start = time.perf_counter()
  chunk = config.eval.batch_size

  def encode(images: np.ndarray) -> np.ndarray:
    # In chunks: the features of a whole database (59,000 x 3,072 pixels) would not need to fit.
    return np.concatenate(
      [hasher(features(images[s : s + chunk])) for s in range(0, len(images), chunk)]
    )

  query_codes, database_codes = train.encode_split(encode, pooled.images, split)
  evaluation = train.evaluate_codes(
    config, query_codes, database_codes, pooled.labels, split, workdir
  )
  results = {
    "method": config.method,
    "protocol": config.data.protocol,
    "source": config.data.source,
    "bits": config.model.bits,
    "seed": config.seed,
    "features": config.baseline.features,
    "feature_dim": int(train_features.shape[1]),
    **fit_info,
    "train_seconds": train_seconds,
    "eval_seconds": time.perf_counter() - eval_start,
    "num_train": int(split.train.size),
    "image_shape": list(pooled.images.shape[1:]),
    "evaluated": "fitted projection",
    **train.run_info(),
    **evaluation,
  }
  return train.write_results(workdir, results)
