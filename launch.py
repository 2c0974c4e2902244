"""Runs the job a config names: `python launch.py --config=configs/dsh.py --workdir=runs/dsh`.

`--config=configs/<name>.py[:arguments]` picks and parameterises the config (see its
docstring); `--config.x.y=value` overrides any field. Results go to `--workdir`.
"""

import sys

from absl import app, flags
from ml_collections import config_flags

from hashing import report, train
from hashing.errors import UserError

config_flags.DEFINE_config_file("config", None, "configs/<name>.py[:arguments]", lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for config, metrics, results, plots, codes.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  del argv
  try:
    results = train.train_and_evaluate(flags.FLAGS.config, flags.FLAGS.workdir)
  except UserError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  print(report.results_table(results))
  print(f"results, plots and codes in {flags.FLAGS.workdir}")


if __name__ == "__main__":
  app.run(main)
