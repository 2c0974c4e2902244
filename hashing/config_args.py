"""Shared pieces of `configs/*.py`: argument parsing, the common fields, data presets, smoke.

Every method's config has the same field names (`method`, `seed`, `data.*`, `model.*`,
`loss.*`, `train.*`, `augment.*`, `eval.*`) so that runs compare and sweeps override alike.
"""

from __future__ import annotations

import ml_collections
from ml_collections import config_dict

from hashing.errors import UserError

# name -> (source, protocol, overrides of config.data). Relative paths resolve against
# $HASHING_DATA_DIR (see data.load_source).
DATA_PRESETS = {
  "embedded": ("embedded", "fashion-mnist-embedded", {}),
  "fashion-mnist": (
    "idx:/usr/share/datasets/fashion-mnist",
    "per-class",
    {"query_per_class": 100, "train_per_class": 500, "train_from_database": True},
  ),
  "cifar10-dnnh": ("npz:cifar10", "cifar10-dnnh", {}),
  "cifar10-dsh": ("npz:cifar10", "cifar10-dsh", {}),
}
# Image geometry per preset: crop padding for the random-crop augmentation.
CROP_PADDING = {"embedded": 2, "fashion-mnist": 2, "cifar10-dnnh": 4, "cifar10-dsh": 4}
# Random flip + crop by default? Not on the embedded data: its 12-epoch schedule underfits, and
# augmentation cost 0.04 mAP there (configs/ablations.py:study=augment, benchmarks/RESULTS.md).
AUGMENTED = {"embedded": False, "fashion-mnist": True, "cifar10-dnnh": True, "cifar10-dsh": True}
# Epochs per preset: 5,000 training images need many passes, 50,000 fewer.
EPOCHS = {"embedded": 12, "fashion-mnist": 100, "cifar10-dnnh": 300, "cifar10-dsh": 60}
# More regularisation for the 5,000 training images of cifar10-dnnh, every method: random
# brightness, contrast and saturation (color jitter) and AdamW's decoupled weight decay, which
# shrinks the weights by learning_rate x weight_decay per step: 1.5e-4 at the base rate 1e-3
# (configs/dsh.py: 3e-3 x 0.05). At 48 bits it took CNNH+ from 0.495 to 0.533 and DNNH with
# semi-hard triplets from 0.545 to 0.575 (with 0.05: 0.526, 0.554), and CNNH and CNNH+ reach
# their published numbers at every length with it; DSH gained in all eight runs
# (benchmarks/RESULTS.md, weight decay with color jitter; CNNH and CNNH+). Not in the papers.
COLOR_JITTER = {"cifar10-dnnh": 0.4}
WEIGHT_DECAY = {"cifar10-dnnh": 0.15}  # with optimizer adamw
# The arguments every config takes, with their defaults (a config adds its own).
COMMON_ARGUMENTS = {"bits": (12, 24, 32, 48), "data": "embedded", "database": "", "smoke": False}


def parse_arg(arg: str | None, allowed: dict[str, object]) -> dict[str, object]:
  """Parses `"bits=12/24,smoke,data=cifar10-dnnh"` into a dict, starting from `allowed`.

  A bare word sets a boolean flag (`smoke` -> True). `bits` takes `/`-separated integers.
  """
  values = dict(allowed)
  for item in filter(None, (arg or "").split(",")):
    key, _, value = item.partition("=")
    if key not in allowed:
      raise UserError(f"unknown config argument {key!r}; valid ones: {sorted(allowed)}.")
    if not value:
      values[key] = True
    elif key == "bits":
      try:
        values[key] = tuple(int(b) for b in value.split("/"))
      except ValueError:
        raise UserError(
          f"bits={value!r}: give integers separated by '/', e.g. bits=12/24/32/48."
        ) from None
    else:
      values[key] = value
  return values


def base_config(method: str, args: dict[str, object]) -> ml_collections.ConfigDict:
  """The fields every method shares, with the `COMMON_ARGUMENTS` applied (`smoke` shrinks the
  run; it only touches fields defined here, so a config may add its own after)."""
  c = ml_collections.ConfigDict()
  c.method = method
  c.seed = 0
  # Several bit lengths -> one sub-workdir each plus a combined table; () trains model.bits.
  bits = tuple(args["bits"])
  c.bit_lengths = bits if len(bits) > 1 else ()

  preset = args["data"]
  if preset not in DATA_PRESETS:
    raise UserError(f"data={preset!r} is unknown; choose one of {sorted(DATA_PRESETS)}.")
  source, protocol, data_overrides = DATA_PRESETS[preset]
  c.data = ml_collections.ConfigDict()
  c.data.source = source  # embedded | idx:<dir> | npz:<file/glob/dir> | tfds:<name> | folder:<dir>
  c.data.protocol = protocol  # see hashing/protocols.py
  c.data.image_size = 0  # folder sources: resize to this square size (0 = keep)
  # Per-class sampler settings; None keeps the protocol's preset.
  c.data.query_per_class = config_dict.placeholder(int)
  c.data.train_per_class = config_dict.placeholder(int)
  c.data.train_from_database = config_dict.placeholder(bool)
  c.data.database = config_dict.placeholder(str)  # rest | train | query
  c.data.database_limit = 0  # > 0: random database subset (smoke only; changes the protocol)
  c.data.split_seed = config_dict.placeholder(int)  # None: the split follows config.seed
  for key, value in data_overrides.items():
    c.data[key] = value
  if args.get("database"):
    c.data.database = str(args["database"])

  c.model = ml_collections.ConfigDict()
  c.model.bits = bits[0]
  c.model.backbone = "dsh"
  c.model.head = "fc"
  c.model.output = "none"  # none | tanh | sigmoid (binarised at 0.5)
  c.model.features_per_bit = 0  # > 0: backbone features = features_per_bit * bits (DNNH: 50)
  c.model.quantize_eps = 0.0  # > 0: DNNH piecewise threshold of sigmoid outputs in training
  c.model.quantize_gradient = "zero"  # zero | straight_through: the threshold's gradient
  c.model.dropout = 0.0  # > 0: dropout on the backbone features in training
  c.model.class_input = "features"  # features | codes: what a class-label output reads
  # True: a code is the mean of the outputs for the image and its mirror image (test time only;
  # for data whose classes survive a horizontal flip).
  c.model.flip_average = False
  c.model.dtype = "float32"  # float32 | bfloat16 (compute; parameters and loss stay float32)

  c.train = ml_collections.ConfigDict()
  c.train.epochs = EPOCHS[preset]
  c.train.steps = 0  # > 0 overrides epochs
  c.train.batch_size = 128
  c.train.optimizer = "adamw" if preset in WEIGHT_DECAY else "adam"  # adam | adamw | sgd
  c.train.learning_rate = 1e-3
  c.train.momentum = 0.9  # sgd only
  c.train.weight_decay = WEIGHT_DECAY.get(preset, 0.0)
  c.train.weight_decay_exclude = ""  # modules without decay, comma-separated: e.g. "head"
  c.train.schedule = "cosine"  # constant | cosine | step
  c.train.warmup_steps = 100
  c.train.decay_at = (0.5, 0.75)  # step schedule: fractions of training where lr /= 10
  c.train.log_every = 50
  c.train.checkpoint_every = 1000  # steps; also at the end. A rerun resumes from the newest.
  c.train.triplet_apply = "vmap"  # explicit triplets: vmap | concat | separate (same codes)
  c.train.scan_steps = 0  # steps per lax.scan chunk on device data; 0: 1 on CPU, else log_every
  c.train.data_parallel = True  # several devices: split each batch over all of them

  c.augment = ml_collections.ConfigDict()
  c.augment.flip = AUGMENTED[preset]
  c.augment.crop_padding = CROP_PADDING[preset] if AUGMENTED[preset] else 0
  c.augment.cutout = 0  # > 0: zero a random square of this side per image (Cutout)
  # > 0: brightness, contrast and saturation scaled by factors in [1 - s, 1 + s]
  c.augment.color_jitter = COLOR_JITTER.get(preset, 0.0)
  # > 1: each batch holds batch_size / repeats images, each augmented `repeats` times.
  c.augment.repeats = 1
  # > 0: mixup with lam ~ Beta(mixup, mixup) of images with their stage-1 codes and labels (CNNH).
  c.augment.mixup = 0.0

  c.eval = ml_collections.ConfigDict()
  c.eval.map_at = (1000, 5000) if preset != "embedded" else (100, 1000)
  c.eval.precision_at = (1, 10, 50, 100, 200, 500, 1000)
  c.eval.batch_size = 1000
  c.eval.every = 0  # > 0: log the mAP every that many steps (metrics.jsonl "eval_map")
  if args.get("smoke"):
    apply_smoke(c)
  return c


def apply_smoke(c: ml_collections.ConfigDict) -> None:
  """Shrinks a config so it runs in seconds on a CPU (tests and CI)."""
  c.train.steps = 20
  c.train.batch_size = 32
  c.train.warmup_steps = 5
  c.train.log_every = 5
  c.train.checkpoint_every = 10
  if c.data.protocol != "cifar10-dsh":
    c.data.query_per_class = 10
    c.data.train_per_class = 30
  c.data.database_limit = 2000
  c.eval.batch_size = 500
