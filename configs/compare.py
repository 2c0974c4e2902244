"""Compare the loss formulations on one protocol and one backbone: DSH (pairwise), DNNH
(triplet), CNNH and CNNH+ (two-stage), and the shallow baselines LSH and ITQ on pixels and on
the trained DSH net's features, at several bit lengths and seeds. A sweep: each method and
seed trains into its own sub-workdir.

Run (embedded Fashion-MNIST, DSH net, 12/24/32/48 bits, 3 seeds; about an hour on 2 CPU cores):
  python launch.py --config=configs/compare.py --workdir=runs/compare
CIFAR-10 with the published protocol (wants a GPU), then the tables again without training:
  python launch.py --config=configs/compare.py:data=cifar10-dnnh --workdir=runs/compare-c10
  python launch.py --config=configs/compare.py:data=cifar10-dnnh --workdir=runs/compare-c10 --report
Arguments: data=embedded|fashion-mnist|cifar10-dnnh|cifar10-dsh, bits=<q>[/<q>...],
backbone=dsh|nin-narrow|nin|vgg11|vgg11-narrow, seeds=<n>, methods=<m>[/<m>...] (default all:
dsh, dnnh, cnnh, cnnh+, lsh, itq, lsh-features, itq-features = LSH / ITQ on the backbone
features of the DSH run),
smoke.
Writes table.md (every run), summary.md (mean ± std over seeds) and per-bit-length plots.
"""

import pathlib

from hashing import config_args, sweeps

# <lsh|itq>-features: the baseline on the backbone features of the sweep's own DSH run of the
# same seed.
FEATURE_METHODS = ("lsh-features", "itq-features")
METHODS = ("dsh", "dnnh", "cnnh", "cnnh+", "lsh", "itq", *FEATURE_METHODS)
ARGUMENTS = {
  "data": "embedded",
  "bits": (12, 24, 32, 48),
  "backbone": "dsh",
  "seeds": "3",
  "methods": "/".join(METHODS),
  "smoke": False,
}


def _args(arg):
  args = config_args.parse_arg(arg, ARGUMENTS)
  methods = str(args["methods"]).split("/")
  unknown = sorted(set(methods) - set(METHODS))
  if unknown:
    raise config_args.UserError(f"methods: {unknown} unknown; choose from {list(METHODS)}.")
  args["methods"] = methods
  return args


def get_config(arg=None):
  """The base config of the sweep (DSH); every entry of get_sweep names its own config."""
  args = _args(arg)
  folder = str(pathlib.Path(__file__).parent)
  return sweeps.load_config(folder, f"dsh:{_shared(args)},backbone={args['backbone']}")


def _shared(args) -> str:
  shared = [f"data={args['data']}", "bits=" + "/".join(str(b) for b in args["bits"])]
  return ",".join(shared + (["smoke"] if args["smoke"] else []))


def get_sweep(arg=None):
  """One entry per (method, seed): which config file and argument, plus the shared backbone."""
  args = _args(arg)
  shared, backbone = _shared(args), args["backbone"]
  per_method = {
    "dsh": f"dsh:{shared},backbone={backbone}",
    "dnnh": f"dnnh:{shared},backbone={backbone}",
    "cnnh": f"cnnh:{shared},backbone={backbone}",
    "cnnh+": f"cnnh:cnnh+,{shared},backbone={backbone}",
    "lsh": f"baselines:method=lsh,{shared}",
    "itq": f"baselines:method=itq,{shared}",
  }
  bits = args["bits"]
  # The DSH run of one seed: its largest bit length's sub-workdir when it trains several.
  dsh_run = "{workdir}/dsh-seed{seed}" + (f"/bits-{max(bits)}" if len(bits) > 1 else "")
  for method in FEATURE_METHODS:
    baseline = method.removesuffix("-features")
    per_method[method] = f"baselines:method={baseline},features=model:{dsh_run},{shared}"
    if method in args["methods"] and "dsh" not in args["methods"]:
      raise config_args.UserError(f"methods: {method} needs dsh (it uses the DSH runs' features).")
  return [
    {
      "name": f"{method}-seed{seed}",
      "config": per_method[method].replace("{seed}", str(seed)),
      "seed": seed,
    }
    for method in args["methods"]
    for seed in range(int(args["seeds"]))
  ]
