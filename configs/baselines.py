"""Shallow baselines LSH (random hyperplanes) and ITQ (iterative quantization), see
hashing/baselines.py: fitted on the protocol's training images, evaluated like the deep methods.

Run (embedded Fashion-MNIST, 12/24/32/48 bits, pixels; seconds on a 2-core CPU):
  python launch.py --config=configs/baselines.py:method=lsh --workdir=runs/lsh
  python launch.py --config=configs/baselines.py:method=itq --workdir=runs/itq
CIFAR-10 shards under $HASHING_DATA_DIR/cifar10 (1,000 queries, 5,000 training images):
  python launch.py --config=configs/baselines.py:method=itq,data=cifar10-dnnh --workdir=runs/itq-c10
On the backbone features of a trained run (one bit length; same data and seed, so that its
training images do not include the queries):
  python launch.py --config=configs/dsh.py:bits=48 --workdir=runs/dsh-48
  python launch.py --config=configs/baselines.py:method=itq,features=model:runs/dsh-48 \\
    --workdir=runs/itq-dsh-features
Arguments: method=lsh|itq (default itq), features=pixels (default) or model:<workdir>,
bits=<q>[/<q>...], data=embedded|fashion-mnist|cifar10-dnnh|cifar10-dsh, database=rest|train|query,
smoke (a smaller protocol for tests). Fields: --config.baseline.iterations=50 (ITQ),
--config.seed=0 (split, LSH projection, ITQ initial rotation). A baseline is fitted, not trained:
the config has no train, augment or loss fields, and model.bits only.
"""

from hashing import baselines, config_args


def get_config(arg=None):
  args = config_args.parse_arg(
    arg,
    {
      "method": "itq",
      "features": "pixels",
      **config_args.COMMON_ARGUMENTS,
    },
  )
  if args["method"] not in baselines.METHODS:
    raise config_args.UserError(
      f"method={args['method']!r} is unknown; choose one of {list(baselines.METHODS)}."
    )
  c = config_args.base_config(args["method"], args)
  # Drop what only training uses, so that overriding it is an error rather than ignored.
  del c["train"], c["augment"]
  c.model = config_args.ml_collections.ConfigDict({"bits": c.model.bits})
  c.baseline = config_args.ml_collections.ConfigDict()
  c.baseline.features = args["features"]  # pixels | model:<workdir of a trained run>
  c.baseline.iterations = 50  # ITQ: alternations of B = sign(VR) and the Procrustes R
  return c
