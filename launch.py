"""Runs the job a config names: `python launch.py --config=configs/dsh.py --workdir=runs/dsh`.

`--config=configs/<name>.py[:arguments]` picks and parameterises the config (see its
docstring); `--config.x.y=value` overrides any field. Results go to `--workdir`.
A user mistake (bad flag, unknown config key, missing data) ends with one `error:` line and
exit status 2, without a traceback.
"""

import sys

from absl import flags
from ml_collections import config_flags

from hashing import report, train
from hashing.errors import UserError

config_flags.DEFINE_config_file("config", None, "configs/<name>.py[:arguments]", lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for config, metrics, results, plots, codes.")


def fail(message: str) -> None:
  print("error: " + " ".join(message.split()), file=sys.stderr)
  sys.exit(2)


def main(argv: list[str]) -> None:
  try:
    flags.FLAGS(argv)
    config = flags.FLAGS.config
    if config is not None:
      config.get("method")  # a config file that failed to load only raises when first read
  except UserError as e:  # raised by a config's get_config(arg)
    fail(str(e))
  except Exception as e:  # noqa: BLE001 - anything wrong while parsing flags is a user mistake
    fail(f"{e}; see the config's docstring and `python launch.py --help`.")
  if config is None or not flags.FLAGS.workdir:
    fail("both --config=configs/<name>.py[:arguments] and --workdir=<dir> are required.")
  try:
    results = train.train_and_evaluate(config, flags.FLAGS.workdir)
  except UserError as e:
    fail(str(e))
  print(report.results_table(results))
  print(f"results, plots and codes in {flags.FLAGS.workdir}")


if __name__ == "__main__":
  main(sys.argv)
