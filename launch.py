"""Runs the job a config names: `python launch.py --config=configs/dsh.py --workdir=runs/dsh`.

`--config=configs/<name>.py[:arguments]` picks and parameterises the config (see its
docstring); `--config.x.y=value` overrides any field. Results go to `--workdir`.
A config that defines `get_sweep()` trains each run of its sweep into a sub-workdir
(`--processes=N`: N runs at once). `--report` rebuilds tables and plots of a finished workdir
without training.
Several hosts (TPU pod slice, GPU hosts): start the same command on every host with
`--distributed` (TPU, Slurm, Open MPI detect the rest) or with `--coordinator_address=host:port
--num_processes=N --process_id=i`; see the README.
A user mistake (bad flag, unknown config key, missing data) ends with one `error:` line and
exit status 2, without a traceback.
"""

import os
import sys

from absl import flags
from ml_collections import config_flags

from hashing import parallel, report, sweeps, train
from hashing.errors import UserError

config_flags.DEFINE_config_file("config", None, "configs/<name>.py[:arguments]", lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for config, metrics, results, plots, codes.")
flags.DEFINE_integer("processes", 1, "Sweeps: number of runs trained at once (processes).")
flags.DEFINE_bool(
  "vmap", False, "Sweeps: train runs differing only in seed/alpha/margin/rate in one vmapped step."
)
flags.DEFINE_bool("report", False, "Only rebuild tables and plots of --workdir from its results.")
flags.DEFINE_bool(
  "distributed", False, "Multi-host: jax.distributed.initialize() (TPU, Slurm, Open MPI detected)."
)
flags.DEFINE_string("coordinator_address", None, "Multi-host: host:port of process 0.")
flags.DEFINE_integer("num_processes", None, "Multi-host: number of processes.")
flags.DEFINE_integer("process_id", None, "Multi-host: this process's index, 0..N-1.")


def fail(message: str) -> None:
  print("error: " + " ".join(message.split()), file=sys.stderr)
  sys.exit(2)


def start_distributed(flag_values) -> None:
  """Joins a multi-host run when `--distributed` or the coordinator flags ask for one."""
  explicit = (flag_values.coordinator_address, flag_values.num_processes, flag_values.process_id)
  if not flag_values.distributed and all(v is None for v in explicit):
    return
  if flag_values.processes > 1:
    raise UserError("--processes=N starts local worker processes; it cannot join a multi-host run.")
  parallel.initialize_distributed(*explicit)


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
  workdir, keys = flags.FLAGS.workdir, ()
  try:
    start_distributed(flags.FLAGS)
    path, arg = sweeps.split_config_spec(config_flags.get_config_filename(flags.FLAGS["config"]))
    get_sweep = getattr(sweeps.load_config_module(path), "get_sweep", None)
    if flags.FLAGS.report:
      results = sweeps.report_workdir(workdir)
    elif get_sweep is not None:
      sweep = get_sweep(arg)
      results = sweeps.run_sweep(
        config,
        sweep,
        workdir,
        config_dir=os.path.dirname(path),
        processes=flags.FLAGS.processes,
        vmap=flags.FLAGS.vmap,
      )
    else:
      results = train.train_and_evaluate(config, workdir)
    keys = sweeps.swept_fields([r.get("overrides", {}) for r in results])
  except UserError as e:
    fail(str(e))
  if not parallel.is_main_process():
    return  # process 0 prints (and writes) for all
  print(report.results_table(results, keys))
  if keys:  # a sweep: also the papers' layout, mean ± std over seeds
    print(report.paper_table(results, keys))
  print(f"results, plots and codes in {workdir}")


if __name__ == "__main__":
  main(sys.argv)
