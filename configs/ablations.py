"""Ablations as sweeps: what each design choice buys, one study at a time, several seeds.

  python launch.py --config=configs/ablations.py:study=head --workdir=runs/ablate-head
Studies (study=...):
  head      DNNH divide-and-encode vs fully-connected encode, at each bit length
  output    DSH loss: linear output + regularizer alpha in 0, 0.001, 0.01, 0.1, 1 vs a sigmoid
            output without regularizer (margin scaled by 1/4: distances in [0, 1]^q are 4x smaller)
  margin    DSH margin m in q/2, q, 2q (the paper), 4q
  classes   DSH plus a class-label output (cross-entropy on the backbone features) of weight
            0 (the paper), 0.1, 1, 10
  triplets  DNNH explicit random triplets vs in-batch all / hardest / semi-hard triplets
  quantize  DNNH piecewise-threshold quantization eps in 0 (off), 0.05, 0.1, 0.2, with the
            threshold's own gradient (zero where snapped) and with a straight-through one
  bits      DSH code length 8, 16, 32, 64, 128
  augment   DSH without augmentation (the embedded default) vs random flip + crop (the other
            presets' default) vs flip + crop + cutout
Arguments: study=<name>, data=embedded|fashion-mnist|cifar10-dnnh|cifar10-dsh, bits=<q> (one
length; head: several), backbone=dsh|nin-narrow|nin|vgg11|vgg11-narrow, seeds=<n>, smoke.
Writes table.md, summary.md (mean ± std over seeds per setting) and plots per bit length. With
`--config.eval.every=<steps>` every run logs its test mAP as it trains, and summary.md adds the
wall time each run needed to reach the published mAP and the first run's final mAP, e.g. explicit
vs in-batch triplets on CIFAR-10 (issue 3's measurement):

  python launch.py --config=configs/ablations.py:study=triplets,data=cifar10-dnnh,bits=48,seeds=1 \
    --config.eval.every=975 --workdir=runs/ablate-triplets-cifar10
"""

import pathlib

from hashing import config_args, sweeps

STUDIES = ("head", "output", "margin", "classes", "triplets", "quantize", "bits", "augment")
ARGUMENTS = {
  "study": "head",
  "data": "embedded",
  "bits": (48,),
  "backbone": "dsh",
  "seeds": "2",
  "smoke": False,
}


def _args(arg):
  args = config_args.parse_arg(arg, ARGUMENTS)
  if args["study"] not in STUDIES:
    raise config_args.UserError(f"study={args['study']!r} is unknown; choose one of {STUDIES}.")
  return args


def get_config(arg=None):
  """The base config of the study: DNNH or DSH with the shared arguments."""
  args = _args(arg)
  method = "dnnh" if args["study"] in ("head", "triplets", "quantize") else "dsh"
  shared = [
    f"data={args['data']}",
    "bits=" + "/".join(str(b) for b in args["bits"]),
    f"backbone={args['backbone']}",
  ]
  arg = ",".join(shared + ["smoke"] * args["smoke"])
  return sweeps.load_config(str(pathlib.Path(__file__).parent), f"{method}:{arg}")


def get_sweep(arg=None):
  """Dotted overrides of the study's base config (`get_config`), times the seeds."""
  args = _args(arg)
  q = args["bits"][0]
  pad = config_args.CROP_PADDING[args["data"]]
  settings = {
    "head": [{"model.head": h} for h in ("dae", "fc")],
    "output": [{"loss.alpha": a} for a in (0.0, 0.001, 0.01, 0.1, 1.0)]
    + [{"model.output": "sigmoid", "loss.alpha": 0.0, "loss.margin": q / 2}],
    "margin": [{"loss.margin": f * q} for f in (0.5, 1.0, 2.0, 4.0)],
    "classes": [{"loss.class_weight": w} for w in (0.0, 0.1, 1.0, 10.0)],
    "triplets": [{"loss.sampling": s} for s in ("random", "all", "hard", "semihard")],
    "quantize": [{"model.quantize_eps": e} for e in (0.0, 0.05, 0.1, 0.2)]
    + [
      {"model.quantize_eps": e, "model.quantize_gradient": "straight_through"}
      for e in (0.05, 0.1, 0.2)
    ],
    "bits": [{"model.bits": b} for b in (8, 16, 32, 64, 128)],
    "augment": [
      {"augment.flip": flip, "augment.crop_padding": crop, "augment.cutout": cutout}
      for flip, crop, cutout in ((False, 0, 0), (True, pad, 0), (True, pad, 8))
    ],
  }[args["study"]]
  return [{**setting, "seed": seed} for setting in settings for seed in range(int(args["seeds"]))]
