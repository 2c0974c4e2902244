"""Flax Linen hashing networks: backbone -> head -> real-valued codes `[batch, bits]`.

Pure functions: `params = model.init(key, images)`, `codes = model.apply(params, images)`.
Images enter as uint8 `[batch, height, width, channels]`; normalisation happens inside the
model so that every caller (training, evaluation, indexing) sees the same input transform.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from hashing import compiling
from hashing.errors import UserError
from hashing.pooling import avg_pool, max_pool


def convolve(x: jnp.ndarray, kernel: jnp.ndarray) -> jnp.ndarray:
  """'SAME' stride-1 convolution, NHWC `x` `[batch, h, w, in]`, HWIO `kernel` `[k, k, in, out]`.

  A 1 x 1 kernel is applied as one matrix product `[batch * h * w, in] @ [in, out]`: the same
  values, but XLA:CPU differentiates a 1 x 1 convolution with convolutions, which took 1.6-1.9x
  as long as the matrix products' gradients for the narrow NIN's 128 x 32 x 32 x 32 layer
  (benchmarks/conv_layers.py; the narrow NIN's train step: 1.04-1.11x the images/s).
  """
  if kernel.shape[:2] == (1, 1):
    return (x.reshape(-1, x.shape[-1]) @ kernel[0, 0]).reshape(x.shape[:-1] + kernel.shape[-1:])
  return jax.lax.conv_general_dilated(
    x, kernel, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
  )


class Conv(nn.Module):
  """`nn.Conv` with 'SAME' padding and stride 1 (the same parameter names, shapes and
  initialisers), computed by `convolve`."""

  features: int
  kernel_size: int
  dtype: jnp.dtype = jnp.float32  # computation dtype; parameters stay float32

  def inputs_and_params(self, x: jnp.ndarray):
    """(x, kernel `[k, k, in, features]`, bias `[features]`) in the computation dtype."""
    k = self.kernel_size
    kernel = self.param(
      "kernel", nn.initializers.lecun_normal(), (k, k, x.shape[-1], self.features)
    )
    bias = self.param("bias", nn.initializers.zeros_init(), (self.features,))
    return nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    x, kernel, bias = self.inputs_and_params(x)
    return convolve(x, kernel) + bias


class ConvReluMaxPool(Conv):
  """`max_pool(relu(conv(x) + bias))` ('SAME' convolution, k x k kernel; 'SAME' max pool)
  computed as `relu(max_pool(conv(x)) + bias)`: the same values, since the maximum commutes
  with adding a per-channel constant and with the ReLU (both non-decreasing), but the bias
  and the ReLU then run on the pooled tensor, a quarter of the convolution's output, forward
  and backward (with `pooling.avg_pool`, 1.09-1.14x the train step's images/s on the 2-core
  CPU; benchmarks/RESULTS.md). Parameters as `Conv`'s (those of the `nn.Conv` it replaces).
  """

  window: int = 3
  stride: int = 2

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    x, kernel, bias = self.inputs_and_params(x)
    return nn.relu(max_pool(convolve(x, kernel), self.window, self.stride) + bias)


class DSHBackbone(nn.Module):
  """The DSH network of Liu et al. (CVPR 2016) up to its 500-unit hidden layer.

  conv 32@5x5 -> max-pool 3/2 -> ReLU -> conv 32@5x5 -> ReLU -> avg-pool 3/2 -> conv 64@5x5
  -> ReLU -> avg-pool 3/2 -> FC 500 -> ReLU. 'SAME' padding everywhere, so pooling rounds up
  like Caffe's ceil mode (32 -> 16 -> 8 -> 4); any image size and channel count works.
  Output: features `[batch, hidden]`.
  """

  widths: Sequence[int] = (32, 32, 64)
  hidden: int = 500
  dtype: jnp.dtype = jnp.float32  # computation dtype; parameters stay float32

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    # Explicit names keep the parameter tree of three `nn.Conv`s (Conv_0..2).
    x = ConvReluMaxPool(self.widths[0], 5, dtype=self.dtype, name="Conv_0")(x)
    x = nn.relu(Conv(self.widths[1], 5, dtype=self.dtype, name="Conv_1")(x))
    x = avg_pool(x, 3, 2)
    x = nn.relu(Conv(self.widths[2], 5, dtype=self.dtype, name="Conv_2")(x))
    x = avg_pool(x, 3, 2)
    x = x.reshape((x.shape[0], -1))
    return nn.relu(nn.Dense(self.hidden, dtype=self.dtype)(x))


class NINBackbone(nn.Module):
  """The network-in-network of DNNH (Lai et al., CVPR 2015) up to its global average pool.

  conv w0@5x5 -> 1x1 w0 -> max-pool 3/2 -> conv w1@5x5 -> 1x1 w1 -> max-pool 3/2 -> 1x1 w2
  -> 1x1 w2 -> avg-pool 3/2 -> conv w3@3x3 -> 1x1 `features` -> global avg-pool, a ReLU after
  every convolution, 'SAME' padding. The paper's widths are (96, 256, 384, 1024) with
  `features` = 50 * bits, so that divide-and-encode gives each bit a slice of 50.
  Output: features `[batch, features]`.
  """

  widths: Sequence[int] = (96, 256, 384, 1024)
  features: int = 2400
  dtype: jnp.dtype = jnp.float32  # computation dtype; parameters stay float32

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    w0, w1, w2, w3 = self.widths
    names = (f"Conv_{i}" for i in range(10))  # the parameter tree of ten `nn.Conv`s

    def conv(x, width, size):
      return nn.relu(Conv(width, size, dtype=self.dtype, name=next(names))(x))

    def conv_pool(x, width):  # a 1x1 convolution, ReLU and max-pool 3/2
      return ConvReluMaxPool(width, 1, dtype=self.dtype, name=next(names))(x)

    x = conv_pool(conv(x, w0, 5), w0)
    x = conv_pool(conv(x, w1, 5), w1)
    x = avg_pool(conv(conv(x, w2, 1), w2, 1), 3, 2)
    x = conv(conv(x, w3, 3), self.features, 1)
    return jnp.mean(x, axis=(1, 2))


class VGGBackbone(nn.Module):
  """A VGG-style network for small images (VGG-11's convolutions), for runs that want more
  capacity than the papers' small networks (the from-scratch 0.70-at-48-bits goal).

  Stages of 3x3 convolutions, each followed by group normalisation and ReLU, a 2x2 max-pool
  after every stage (32 -> 16 -> 8 -> 4 -> 2 -> 1), global average pool, FC `hidden` + ReLU.
  Group (not batch) normalisation: no batch statistics to carry, so the train step stays a
  pure function of the parameters and runs unchanged under vmap, scan and sharding.
  Output: features `[batch, hidden]`.
  """

  stages: Sequence[Sequence[int]] = ((64,), (128,), (256, 256), (512, 512), (512, 512))
  hidden: int = 512
  groups: int = 32
  dtype: jnp.dtype = jnp.float32  # computation dtype; parameters stay float32

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    for widths in self.stages:
      for width in widths:
        x = nn.Conv(width, (3, 3), padding="SAME", use_bias=False, dtype=self.dtype)(x)
        x = nn.relu(nn.GroupNorm(num_groups=min(self.groups, width), dtype=self.dtype)(x))
      x = max_pool(x, 2, 2)
    x = jnp.mean(x, axis=(1, 2))
    return nn.relu(nn.Dense(self.hidden, dtype=self.dtype)(x))


class FCHead(nn.Module):
  """Fully-connected encode: features `[batch, d]` -> `[batch, bits]`."""

  bits: int
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, features: jnp.ndarray) -> jnp.ndarray:
    return nn.Dense(self.bits, dtype=self.dtype)(features)


class DivideAndEncodeHead(nn.Module):
  """Divide-and-encode (DNNH): features `[batch, d]` split into `bits` slices of s = d / bits;
  bit k sees only slice k: `out[:, k] = features[:, k*s:(k+1)*s] . w_k + b_k` -> `[batch, bits]`.

  Each bit depending on its own slice is what the paper argues reduces redundancy between bits.
  """

  bits: int
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, features: jnp.ndarray) -> jnp.ndarray:
    batch, width = features.shape
    if width % self.bits:
      raise ValueError(f"{width} features do not split into {self.bits} equal slices")
    slice_width = width // self.bits
    # fan-in of each unit is its slice width (axis 1), not the number of bits.
    init = nn.initializers.lecun_normal(in_axis=1, out_axis=0)
    kernel = self.param("kernel", init, (self.bits, slice_width))
    bias = self.param("bias", nn.initializers.zeros, (self.bits,))
    slices = features.reshape(batch, self.bits, slice_width).astype(self.dtype)
    return jnp.einsum("bks,ks->bk", slices, kernel.astype(self.dtype)) + bias.astype(self.dtype)


OUTPUTS = {"none": lambda x: x, "tanh": jnp.tanh, "sigmoid": nn.sigmoid}
# The values an output stands for as a 0-bit and a 1-bit (DSH's +-1; the sigmoid's 0 and 1).
BINARY_LEVELS = {"none": (-1.0, 1.0), "tanh": (-1.0, 1.0), "sigmoid": (0.0, 1.0)}
# Where each output is binarised: a bit is set when output > threshold, the levels' midpoint.
THRESHOLDS = {name: (lo + hi) / 2 for name, (lo, hi) in BINARY_LEVELS.items()}


QUANTIZE_GRADIENTS = ("zero", "straight_through")
CLASS_INPUTS = ("features", "codes")  # what the class-label output (num_classes > 0) reads


def piecewise_threshold(s: jnp.ndarray, eps: float, gradient: str = "zero") -> jnp.ndarray:
  """DNNH's piecewise-threshold quantization of sigmoid outputs s in [0, 1]:

    g(s) = 0 if s < 0.5 - eps;  1 if s > 0.5 + eps;  s otherwise.

  `gradient="zero"` differentiates g as written: outputs snapped to 0 or 1 pass no gradient and
  only the undecided band around 0.5 keeps training. `"straight_through"` keeps the forward
  value g(s) but passes the gradient on unchanged (dg/ds = 1), so snapped outputs keep learning.
  """
  snapped = jnp.where(s < 0.5 - eps, 0.0, jnp.where(s > 0.5 + eps, 1.0, s))
  if gradient == "straight_through":
    return s + jax.lax.stop_gradient(snapped - s)
  return snapped


class HashNet(nn.Module):
  """Normalise uint8 images, run backbone and head, apply the output activation.

  `pixel_mean`/`pixel_std` are per-channel statistics of the training images, kept as static
  attributes (not parameters) so that they travel with the model definition.
  `quantize_eps` > 0 with a sigmoid output applies `piecewise_threshold` (with its
  `quantize_gradient`) when `train=True`.
  `num_classes` > 0 adds a class-label output: a dense layer on the backbone features (CNNH+),
  or with `class_input="codes"` on the `[batch, bits]` output codes (so that every bit gets the
  classification gradient; SSDH, Yang et al. 2017, classifies from its sigmoid code layer).
  `dropout` > 0 zeroes that fraction of the backbone features (scaling the rest by
  1 / (1 - dropout)) when `train=True`; the apply then needs `rngs={"dropout": key}`.
  `flip_average` makes the test-time output the mean over the image and its mirror image,
  `(f(x) + f(flip(x))) / 2`, so that a code does not change when the image is mirrored
  (training, which sees random flips, is unchanged).
  Input `[batch, H, W, C]` uint8 (or float in 0..255); output codes `[batch, bits]` float32,
  and with `with_logits=True` the pair (codes, logits `[batch, num_classes]`).
  """

  backbone: nn.Module
  head: nn.Module
  output: str = "none"
  pixel_mean: Sequence[float] = (0.0,)
  pixel_std: Sequence[float] = (255.0,)
  quantize_eps: float = 0.0
  quantize_gradient: str = "zero"
  num_classes: int = 0
  class_input: str = "features"
  dropout: float = 0.0
  flip_average: bool = False

  @nn.compact
  def __call__(self, images: jnp.ndarray, train: bool = False, with_logits: bool = False):
    x = (images.astype(jnp.float32) - jnp.asarray(self.pixel_mean)) / jnp.asarray(self.pixel_std)
    averaged = self.flip_average and not train
    if averaged:  # one pass over [2 * batch]: the images, then their mirror images (width axis)
      x = jnp.concatenate([x, x[:, :, ::-1]])
    features = self.backbone(x)
    if self.dropout > 0:
      features = nn.Dropout(self.dropout, deterministic=not train)(features)
    # The output activation, the loss and the optimizer work in float32 whatever the compute
    # dtype of the backbone and head (mixed precision).
    codes = OUTPUTS[self.output](self.head(features).astype(jnp.float32))
    if train and self.output == "sigmoid" and self.quantize_eps > 0:
      codes = piecewise_threshold(codes, self.quantize_eps, self.quantize_gradient)
    # The class output is always built when configured, so that `init` creates its parameters.
    logits = None
    if self.num_classes:
      source = codes if self.class_input == "codes" else features.astype(jnp.float32)
      logits = nn.Dense(self.num_classes, name="classes")(source)
    if averaged:
      codes, logits = jax.tree_util.tree_map(
        lambda y: 0.5 * (y[: len(y) // 2] + y[len(y) // 2 :]), (codes, logits)
      )
    return (codes, logits) if with_logits else codes

  @property
  def threshold(self) -> float:
    """Outputs above this value are 1-bits."""
    return THRESHOLDS[self.output]


TRIPLET_APPLY = ("vmap", "concat", "separate")


def apply_triplets(
  model: HashNet,
  params,
  images: jnp.ndarray,
  *,
  mode: str = "vmap",
  train: bool = False,
  dropout_key: jax.Array | None = None,
) -> jnp.ndarray:
  """One set of shared weights applied to anchors, positives and negatives.

  Args:
    images: `[3, batch, H, W, C]` stacked (anchor, positive, negative) images.
    mode: "vmap" maps `model.apply(params, .)` over the leading axis (DNNH's three
      shared-weight branches); "concat" runs one `[3 * batch]` batch; "separate" runs three
      applies. All three give the same codes; they differ in speed per backend
      (benchmarks/triplet_apply.py).
    dropout_key: the dropout key of a training apply (models with `dropout` > 0); each of the
      three branches draws its own masks from it.

  Returns:
    codes `[3, batch, bits]`.
  """
  # No key: no rngs, so that a model with dropout fails loudly instead of reusing fixed masks.
  keys = None if dropout_key is None else jax.random.split(dropout_key, 3)

  def apply(x, key):
    return model.apply(params, x, train=train, rngs=None if key is None else {"dropout": key})

  def branch_key(i):
    return None if keys is None else keys[i]

  if mode == "vmap":
    return jax.vmap(apply)(images, keys)  # keys None: vmap maps over no leaves
  if mode == "concat":
    three, batch = images.shape[:2]
    codes = apply(images.reshape(three * batch, *images.shape[2:]), branch_key(0))
    return codes.reshape(three, batch, -1)
  if mode == "separate":
    return jnp.stack([apply(images[i], branch_key(i)) for i in range(3)])
  raise UserError(f"triplet apply mode {mode!r} is unknown; choose one of {list(TRIPLET_APPLY)}.")


# Backbone constructors: name -> ((model config, compute dtype) -> (module, number of features
# it outputs)).
# `features_per_bit` > 0 sizes the feature layer as features_per_bit * bits (DNNH: 50), so that
# divide-and-encode gets equal slices; 0 keeps the backbone's own size (DSH: 500).
NIN_WIDTHS = {"nin": (96, 256, 384, 1024), "nin-narrow": (32, 64, 96, 256)}


# VGG-11's convolutions, and the same at a quarter of the width (16 times fewer FLOPs in the
# convolutions: on the 2-core CPU the full one trains at 24 images/s, the narrow one at about
# 900, the DSH net's speed), with the number of normalisation groups of each.
VGG_STAGES = {
  "vgg11": (((64,), (128,), (256, 256), (512, 512), (512, 512)), 32),
  "vgg11-narrow": (((16,), (32,), (64, 64), (128, 128), (128, 128)), 8),
}


def _feature_width(model_config, default: int) -> int:
  per_bit = model_config.get("features_per_bit", 0)
  return per_bit * model_config.bits if per_bit > 0 else default


def _dsh_backbone(model_config, dtype) -> tuple[nn.Module, int]:
  hidden = _feature_width(model_config, DSHBackbone.hidden)
  return DSHBackbone(hidden=hidden, dtype=dtype), hidden


def _nin_backbone(widths: Sequence[int]):
  def build(model_config, dtype) -> tuple[nn.Module, int]:
    features = _feature_width(model_config, 50 * model_config.bits)
    return NINBackbone(widths=widths, features=features, dtype=dtype), features

  return build


def _vgg_backbone(stages: Sequence[Sequence[int]], groups: int):
  def build(model_config, dtype) -> tuple[nn.Module, int]:
    hidden = _feature_width(model_config, VGGBackbone.hidden)
    return VGGBackbone(stages=stages, hidden=hidden, groups=groups, dtype=dtype), hidden

  return build


BACKBONES = {
  "dsh": _dsh_backbone,
  **{name: _nin_backbone(w) for name, w in NIN_WIDTHS.items()},
  **{name: _vgg_backbone(stages, groups) for name, (stages, groups) in VGG_STAGES.items()},
}
HEADS = {"fc": FCHead, "dae": DivideAndEncodeHead}
COMPUTE_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def build_model(
  model_config,
  pixel_mean: Sequence[float] = (0.0,),
  pixel_std: Sequence[float] = (255.0,),
  num_classes: int = 0,
) -> HashNet:
  """Builds a `HashNet` from `config.model` (fields `backbone`, `head`, `bits`, `output`, and
  optionally `features_per_bit`, `quantize_eps`, `quantize_gradient`, `dropout`,
  `flip_average`, `dtype`);
  `num_classes` > 0 adds a class output. `dtype` "bfloat16" computes the backbone and head in
  bfloat16 (mixed precision: parameters, outputs, loss and optimizer state stay float32)."""
  for field, table in (("backbone", BACKBONES), ("head", HEADS)):
    if model_config[field] not in table:
      raise UserError(
        f"config.model.{field}={model_config[field]!r} is unknown; choose one of {sorted(table)}."
      )
  if model_config.output not in OUTPUTS:
    raise UserError(
      f"config.model.output={model_config.output!r} is unknown; choose one of {sorted(OUTPUTS)}."
    )
  bits = model_config.bits
  if bits <= 0:
    raise UserError(f"config.model.bits={bits} must be a positive number of bits.")
  dtype = model_config.get("dtype", "float32")
  if dtype not in COMPUTE_DTYPES:
    raise UserError(
      f"config.model.dtype={dtype!r} is unknown; choose one of {sorted(COMPUTE_DTYPES)}."
    )
  backbone, features = BACKBONES[model_config.backbone](model_config, COMPUTE_DTYPES[dtype])
  if model_config.head == "dae" and features % bits:
    raise UserError(
      f"divide-and-encode splits the {features} features of backbone "
      f"{model_config.backbone!r} into bits={bits} slices, which does not divide; set "
      f"config.model.features_per_bit (features = features_per_bit * bits)."
    )
  eps = model_config.get("quantize_eps", 0.0)
  if not 0 <= eps < 0.5:
    raise UserError(f"config.model.quantize_eps={eps} must be in [0, 0.5) (0 disables it).")
  quantize_gradient = model_config.get("quantize_gradient", "zero")
  if quantize_gradient not in QUANTIZE_GRADIENTS:
    raise UserError(
      f"config.model.quantize_gradient={quantize_gradient!r} is unknown; choose one of "
      f"{list(QUANTIZE_GRADIENTS)}."
    )
  dropout = model_config.get("dropout", 0.0)
  if not 0 <= dropout < 1:
    raise UserError(f"config.model.dropout={dropout} must be in [0, 1) (0 disables it).")
  class_input = model_config.get("class_input", "features")
  if class_input not in CLASS_INPUTS:
    raise UserError(
      f"config.model.class_input={class_input!r} is unknown; choose one of {list(CLASS_INPUTS)}."
    )
  return HashNet(
    backbone=backbone,
    head=HEADS[model_config.head](bits=bits, dtype=COMPUTE_DTYPES[dtype]),
    output=model_config.output,
    pixel_mean=tuple(float(m) for m in pixel_mean),
    pixel_std=tuple(float(s) for s in pixel_std),
    quantize_eps=float(eps),
    quantize_gradient=quantize_gradient,
    num_classes=int(num_classes),
    class_input=class_input,
    dropout=float(dropout),
    flip_average=bool(model_config.get("flip_average", False)),
  )


@functools.lru_cache(maxsize=8)
def _jitted_apply(model: HashNet):
  # Modules hash by their definition: one compiled apply per model across calls (a fresh
  # `jax.jit(model.apply)` per call would trace and compile again).
  return compiling.jit(model.apply)


def encode(model: HashNet, params, images: np.ndarray, batch_size: int = 1000) -> np.ndarray:
  """Real-valued codes `[N, bits]` of uint8 images `[N, H, W, C]`, in fixed-size chunks, centred
  on the model's binarisation threshold: a bit is set where the returned code is > 0.

  The last chunk is padded to `batch_size` so the jitted apply compiles once.
  """
  apply = _jitted_apply(model)
  out = []
  for start in range(0, images.shape[0], batch_size):
    chunk = images[start : start + batch_size]
    pad = batch_size - chunk.shape[0]
    if pad:
      chunk = np.concatenate([chunk, np.zeros((pad, *chunk.shape[1:]), chunk.dtype)])
    out.append(np.asarray(apply(params, chunk))[: batch_size - pad] - model.threshold)
  return np.concatenate(out)
