"""Objectives of the real configs: triplet batches, shared-weight losses, DNNH end to end."""

import chex
import jax
import numpy as np
import pytest
from conftest import load_config

from hashing import augment, data, models, objectives, optim, steps, train
from hashing.errors import UserError
from hashing.losses import batch_triplet_loss, dsh_loss


@pytest.fixture(scope="module")
def embedded():
  splits = data.load_source("embedded")
  pooled = data.pool(splits)
  return pooled.images[:300], pooled.labels[:300]


def test_triplet_batches_stack_anchor_positive_negative(embedded):
  images, labels = embedded
  batches = objectives.Batches("triplets", images, labels, batch_size=16, seed=0)
  batch = batches(3)
  chex.assert_shape(batch["images"], (3, 16, *images.shape[1:]))
  assert batches.images_per_step == 48 and batches.steps_per_epoch == 300 // 16
  # Each (anchor, positive) pair shows images of one class, each negative another class.
  triplets = objectives.sampling.TripletSampler(labels, 0)(3, 16)
  np.testing.assert_array_equal(batch["images"], images[triplets.T])
  assert np.all(labels[triplets[:, 0]].argmax(1) == labels[triplets[:, 1]].argmax(1))
  assert np.all(labels[triplets[:, 0]].argmax(1) != labels[triplets[:, 2]].argmax(1))


def test_repeated_augmentation_batches_hold_each_image_repeats_times(embedded):
  images, labels = embedded
  batches = objectives.Batches("labeled", images, labels, batch_size=20, seed=0, repeats=2)
  assert batches.batch_size == 20 and batches.steps_per_epoch == 300 // 10
  epoch = [batches.indices(step) for step in range(batches.steps_per_epoch)]
  for rows in epoch:  # 10 distinct images, twice
    np.testing.assert_array_equal(rows[:10], rows[10:])
    assert len(set(rows[:10])) == 10
  # One epoch shows every training image exactly `repeats` times.
  np.testing.assert_array_equal(np.bincount(np.concatenate(epoch), minlength=300), 2)
  batch = batches(0)
  np.testing.assert_array_equal(batch["labels"][:10], batch["labels"][10:])
  for kind, size, repeats in (("labeled", 20, 3), ("triplets", 20, 2), ("labeled", 20, 0)):
    with pytest.raises(UserError, match="augment.repeats"):
      objectives.Batches(kind, images, labels, batch_size=size, seed=0, repeats=repeats)


def test_explicit_triplet_loss_and_gradients_same_for_every_apply_mode(embedded):
  images, labels = embedded
  config = load_config("dnnh", "bits=12,smoke")
  model = models.build_model(config.model, [72.0], [89.0])
  batch = objectives.Batches("triplets", images, labels, batch_size=8, seed=0)(0)
  params = model.init(jax.random.key(0), images[:1])
  results = []
  for mode in models.TRIPLET_APPLY:
    config.train.triplet_apply = mode
    objective = objectives.make_objective(config, model)
    assert objective.batch_kind == "triplets"
    hyper = objectives.hyperparameters(config)
    loss_and_grad = jax.jit(jax.value_and_grad(objective.loss))
    results.append(loss_and_grad(params, batch, hyper, jax.random.key(1)))
  for other in results[1:]:
    chex.assert_trees_all_close(other, results[0], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("sampling", objectives.SAMPLING)
def test_dnnh_step_compiles_once_and_lowers_the_loss(embedded, sampling):
  images, labels = embedded
  config = load_config("dnnh", f"bits=12,smoke,sampling={sampling}")
  config.augment.flip, config.augment.crop_padding = False, 0
  model = models.build_model(config.model, [72.0], [89.0])
  objective = objectives.make_objective(config, model)
  batch = objectives.Batches(objective.batch_kind, images, labels, 32, seed=0)(0)
  optimizer = optim.make_optimizer(config.train, 10)
  params = model.init(jax.random.key(0), images[:1])
  state = optimizer.init(params)
  step = steps.make_train_step(objective, optimizer, config.augment)
  hyper = objectives.hyperparameters(config)
  losses = []
  for i in range(10):
    params, state, loss, _ = step(params, state, batch, jax.random.key(i), hyper)
    losses.append(float(loss))
  assert step._cache_size() == 1
  assert losses[-1] < losses[0]


@pytest.mark.parametrize("sampling", ["random", "semihard"])
def test_dnnh_smoke_run_end_to_end(tmp_path, sampling):
  config = load_config("dnnh", f"bits=16,smoke,sampling={sampling}")
  [results] = train.train_and_evaluate(config, str(tmp_path))
  assert (results["method"], results["bits"], results["steps"]) == ("dnnh", 16, 20)
  codes = np.load(tmp_path / "codes.npz")
  assert codes["query_codes"].shape == (100, 2)
  assert 0.0 < results["map"] <= 1.0
  # Codes were binarised at the sigmoid's 0.5, not at 0 (which would set every bit).
  assert 0 < np.unpackbits(codes["database_codes"]).mean() < 1


@pytest.mark.parametrize(
  "field, value, message",
  [
    ("loss.sampling", "hardest", "sampling"),
    ("train.triplet_apply", "pmap", "triplet_apply"),
    ("loss.name", "contrastive", "loss.name"),
  ],
)
def test_bad_triplet_settings_are_user_errors(field, value, message):
  config = load_config("dnnh", "bits=8,smoke")
  section, key = field.split(".")
  config[section][key] = value
  with pytest.raises(UserError, match=message):
    objectives.make_objective(config, models.build_model(config.model))


def test_dropout_masks_follow_the_step_key(embedded):
  images, labels = embedded
  config = load_config("dsh", "bits=12,smoke")
  config.augment.flip, config.augment.crop_padding = False, 0  # only dropout is random
  batch = objectives.Batches("labeled", images, labels, 32, seed=0)(0)
  hyper = objectives.hyperparameters(config)
  losses = {}
  for rate in (0.0, 0.5):
    config.model.dropout = rate
    model = models.build_model(config.model, [72.0], [89.0])
    optimizer = optim.make_optimizer(config.train, 10)
    step = steps.make_train_step(
      objectives.make_objective(config, model), optimizer, config.augment
    )
    params = model.init(jax.random.key(0), images[:1])
    state = optimizer.init(params)
    losses[rate] = [
      float(step(params, state, batch, jax.random.key(k), hyper)[2]) for k in (0, 0, 1)
    ]
  assert losses[0.0][0] == losses[0.0][1] == losses[0.0][2]  # no dropout: the key changes nothing
  assert losses[0.5][0] == losses[0.5][1] != losses[0.5][2]  # dropout: one mask per step key
  assert losses[0.5][0] != losses[0.0][0]


@pytest.mark.parametrize(
  "name, arg, spread_weight, quantize_weight, smoothing",
  [
    ("dsh", "bits=12,smoke", 0.0, 0.0, 0.0),
    ("dsh", "bits=12,smoke", 0.0, 2.0, 0.0),
    ("dnnh", "sampling=semihard,smoke", 0.0, 0.0, 0.0),
    ("dnnh", "sampling=semihard,smoke", 3.0, 2.0, 0.2),
  ],
)
def test_class_spread_and_quantize_weights_add_their_weighted_terms(
  embedded, name, arg, spread_weight, quantize_weight, smoothing
):
  images, labels = embedded
  images, labels = images[:16], labels[:16]
  config = load_config(name, arg)
  config.loss.class_weight = 0.5
  config.loss.spread_weight = spread_weight
  config.loss.quantize_weight = quantize_weight
  if smoothing:
    config.loss.label_smoothing = smoothing
  assert objectives.num_class_outputs(config, labels.shape[1]) == labels.shape[1]
  model = models.build_model(config.model, [72.0], [89.0], num_classes=labels.shape[1])
  params = model.init(jax.random.key(0), images[:1])
  hyper = objectives.hyperparameters(config)
  batch = {"images": images, "labels": labels}
  loss = objectives.make_objective(config, model).loss(params, batch, hyper, jax.random.key(0))
  codes, logits = model.apply(params, images, train=True, with_logits=True)
  # Plain reference: softmax cross-entropy against each image's label, smoothed by a
  # (targets (1 - a) on the label, a / L spread over all L), averaged over the batch.
  log_probs = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
  targets = (1 - smoothing) * labels + smoothing / labels.shape[1]
  cross_entropy = -np.mean((targets * log_probs).sum(axis=1))
  if name == "dsh":
    code_loss = dsh_loss(codes, labels, margin=hyper["margin"], alpha=hyper["alpha"])
  else:
    code_loss = batch_triplet_loss(codes, labels, margin=hyper["margin"], mining="semihard")
  # Plain reference of the bit-spread hinge: population std of each bit over the batch.
  std = np.sqrt(np.var(np.asarray(codes, np.float64), axis=0) + 1e-4)
  hinge = np.maximum(config.loss.get("min_bit_std", 0.0) - std, 0.0)
  if spread_weight:  # the untrained net's outputs all sit near 0.5: the hinge acts on every bit
    assert np.all(hinge > 0)
  spread = spread_weight * hinge.mean()
  # Plain reference of the quantization loss: distance to the nearer of 0 / 1 (sigmoid, DNNH)
  # or -1 / 1 (real-valued outputs, DSH).
  values = np.asarray(codes, np.float64)
  nearest = np.where(values > 0.5, 1.0, 0.0) if name == "dnnh" else np.sign(values)
  quantize = quantize_weight * np.mean(np.abs(values - nearest))
  np.testing.assert_allclose(loss, code_loss + 0.5 * cross_entropy + spread + quantize, rtol=1e-5)
  config.loss.class_weight = 0.0  # the default: no class output
  assert objectives.num_class_outputs(config, labels.shape[1]) == 0


@pytest.mark.parametrize("field", ["class_weight", "spread_weight", "quantize_weight"])
def test_extra_loss_terms_with_explicit_triplets_are_one_clear_error(field):
  config = load_config("dnnh", "sampling=random,smoke")
  config.loss[field] = 1.0
  model = models.build_model(config.model, [72.0], [89.0], num_classes=10)
  with pytest.raises(UserError, match=f"{field} > 0 needs in-batch triplets"):
    objectives.make_objective(config, model)


def test_cnnh_mixup_fits_the_mixed_codes_and_labels_of_mixed_images(embedded):
  images, labels = embedded
  images, labels = images[:16], labels[:16]
  targets = np.where(np.random.default_rng(0).random((16, 12)) < 0.5, -1.0, 1.0)
  config = load_config("cnnh", "cnnh+,bits=12,smoke")
  config.augment.mixup = 0.5
  model = models.build_model(config.model, [72.0], [89.0], num_classes=labels.shape[1])
  params = model.init(jax.random.key(0), images[:1])
  batch = {"images": images, "labels": labels, "targets": targets}
  key = jax.random.key(3)
  objective = objectives.make_objective(config, model)
  loss = objective.loss(params, batch, objectives.hyperparameters(config), key)
  # Reference: the same pairs and weights (the objective's key folded with 1), then CNNH+'s
  # loss by hand on the mixed batch: squared error to the mixed codes + cross-entropy against
  # the mixed labels.
  mixed, mixed_labels, mixed_targets = augment.mixup(
    jax.random.fold_in(key, 1), 0.5, images, labels, targets
  )
  assert not np.allclose(mixed_targets, targets)
  codes, logits = model.apply(params, mixed, train=True, with_logits=True)
  log_probs = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
  cross_entropy = -np.mean((np.asarray(mixed_labels) * log_probs).sum(axis=1))
  regression = np.mean((np.asarray(codes) - np.asarray(mixed_targets)) ** 2)
  np.testing.assert_allclose(loss, regression + cross_entropy, rtol=1e-5)


@pytest.mark.parametrize("name, arg", [("dsh", "smoke"), ("dnnh", "sampling=semihard,smoke")])
def test_mixup_with_a_label_comparing_loss_is_one_clear_error(name, arg):
  config = load_config(name, arg)
  config.augment.mixup = 1.0
  model = models.build_model(config.model, [72.0], [89.0])
  with pytest.raises(UserError, match="mixup=1.0 needs config.loss.name='cnnh'"):
    objectives.make_objective(config, model)
