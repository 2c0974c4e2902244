"""Sweeps: one base config, a list of overrides, one sub-workdir per run, one comparison table.

A config file may define `get_sweep(arg=None)` returning a list of dicts, one per run:

  {"loss.alpha": 0.1, "seed": 1}          dotted field -> value, applied to the base config
  {"config": "dnnh:sampling=hard", ...}   start from another config file of the same folder
                                          (`configs/dnnh.py` with that argument) instead
  {"name": "dnnh-seed0", ...}             the run's sub-workdir name (default: its overrides)

"{workdir}" in a "config" argument stands for the sweep's workdir (e.g. ITQ on the features of
the sweep's own DSH run: `baselines:method=itq,features=model:{workdir}/dsh-seed0`); such
entries run after all the others.

Each run trains into `<workdir>/<name>` (e.g. `loss.alpha=0.1,seed=1`) exactly as `launch.py`
would; a finished run is skipped on restart. Runs go one after another, in parallel processes,
or (`vmap`) several at once in one vmapped step. `sweep.json` records the runs; `table.md`
lists every run and `summary.md` gives the papers' layout and the mean and spread over seeds.
`report_workdir(workdir)` rebuilds them and the plots from the saved results without training.
"""

from __future__ import annotations

import collections
import concurrent.futures
import copy
import importlib.util
import json
import multiprocessing
import os
from collections.abc import Sequence

import ml_collections
import numpy as np

from hashing import baselines, report, retrieval, train
from hashing import io as hio
from hashing.errors import UserError


def load_config_module(path: str):
  """The Python module of a config file `path` (`configs/<name>.py`, no argument)."""
  if not os.path.isfile(path):
    raise UserError(f"config file {path!r} does not exist.")
  name = "sweep_config_" + os.path.splitext(os.path.basename(path))[0].replace("-", "_")
  spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def load_config(config_dir: str, spec: str) -> ml_collections.ConfigDict:
  """The config `<config_dir>/<name>.py` gives for `spec` = "name[:argument]"."""
  name, _, arg = spec.partition(":")
  return load_config_module(os.path.join(config_dir, name + ".py")).get_config(arg or None)


def split_config_spec(spec: str) -> tuple[str, str | None]:
  """`configs/dsh.py:bits=48` -> (`configs/dsh.py`, `bits=48`); no argument -> None."""
  path, sep, arg = spec.partition(".py:")
  return (path + ".py", arg) if sep else (spec, None)


def run_name(entry: dict) -> str:
  """Sub-workdir name of a sweep entry: its `name`, or its `key=value` pairs joined by commas."""
  if "name" in entry:
    return str(entry["name"]).replace(os.sep, "_")
  if not entry:
    return "base"
  return ",".join(f"{k}={_format(v)}" for k, v in entry.items()).replace(os.sep, "_")


def swept_fields(entries: Sequence[dict]) -> list[str]:
  """The dotted fields the entries override (what tables show beside the method), seed last."""
  fields = dict.fromkeys(k for e in entries for k in e if k not in ("name", "config"))
  return [k for k in fields if k != "seed"] + ["seed"] * ("seed" in fields)


def _format(value) -> str:
  if isinstance(value, (list, tuple)):
    return "/".join(str(v) for v in value)
  return str(value)


def apply_overrides(
  base: ml_collections.ConfigDict, overrides: dict, config_dir: str, workdir: str = ""
) -> ml_collections.ConfigDict:
  """A copy of `base` (or of the config named by `overrides["config"]`, with "{workdir}"
  replaced by `workdir`) with dotted fields set.

  Raises UserError for a field the config does not have or a value of the wrong type.
  """
  overrides = {k: v for k, v in overrides.items() if k != "name"}
  spec = overrides.pop("config", None)
  if spec is None:
    config = copy.deepcopy(base)
  else:
    config = load_config(config_dir, str(spec).replace("{workdir}", workdir))
  with config.unlocked():
    for key, value in overrides.items():
      *parents, field = key.split(".")
      section = config
      for parent in parents:
        section = section.get(parent) if isinstance(section, ml_collections.ConfigDict) else None
      if not isinstance(section, ml_collections.ConfigDict) or field not in section:
        raise UserError(f"sweep override {key}={value!r}: the config has no field {key!r}.")
      try:
        section[field] = value
      except TypeError as e:
        raise UserError(f"sweep override {key}={value!r}: {e}") from None
  return config


def _train(config: ml_collections.ConfigDict, workdir: str) -> list[dict]:
  return train.train_and_evaluate(config, workdir)


def run_sweep(
  base: ml_collections.ConfigDict,
  sweep: Sequence[dict],
  workdir: str,
  *,
  config_dir: str = "configs",
  processes: int = 1,
  vmap: bool = False,
) -> list[dict]:
  """Trains every run of `sweep` into its own sub-workdir and writes the comparison files.

  Args:
    base: the base config (with command-line overrides already applied).
    sweep: override dicts (see the module docstring).
    workdir: parent directory of the runs.
    config_dir: where `{"config": name}` entries look for `<name>.py`.
    processes: > 1 trains that many runs at once in separate processes (spawned: JAX does not
      survive a fork).
    vmap: train runs that differ only in `train.STACKABLE_FIELDS` (seed with a fixed
      data.split_seed, loss.alpha, loss.margin, train.learning_rate) together, in one vmapped
      step on one device; the other runs (and all runs with `processes` > 1) as usual.

  Returns:
    Every run's results (one per bit length), each with its `overrides` added.
  """
  if not sweep:
    raise UserError("the config's get_sweep() returned no runs.")
  names = [run_name(o) for o in sweep]
  duplicates = [n for n, c in collections.Counter(names).items() if c > 1]
  if duplicates:
    raise UserError(f"the sweep lists run {duplicates[0]!r} twice; make every entry distinct.")
  # Build every config first: a mistake in any entry stops the sweep before training starts.
  configs = [apply_overrides(base, o, config_dir, workdir) for o in sweep]
  os.makedirs(workdir, exist_ok=True)
  hio.write_json(
    os.path.join(workdir, "sweep.json"),
    {"runs": [{"name": n, "overrides": o} for n, o in zip(names, sweep, strict=True)]},
  )
  dirs = [os.path.join(workdir, n) for n in names]
  # Entries that use the sweep's own runs ("{workdir}") go after the others.
  later = ["{workdir}" in str(entry.get("config", "")) for entry in sweep]
  for phase in (False, True):
    todo = [(c, d) for c, d, late in zip(configs, dirs, later, strict=True) if late == phase]
    if vmap and processes == 1:
      for group in _stackable_groups(todo):
        train.train_and_evaluate_together(*zip(*group, strict=True))
    elif processes > 1 and len(todo) > 1:
      context = multiprocessing.get_context("spawn")
      with concurrent.futures.ProcessPoolExecutor(
        processes, mp_context=context, initializer=_share_accelerator, initargs=(processes,)
      ) as pool:
        list(pool.map(_train, *zip(*todo, strict=True)))
    else:
      for config, run_dir in todo:
        _train(config, run_dir)
  return report_sweep(workdir)


def _share_accelerator(processes: int) -> None:
  """Worker start-up: JAX takes 75% of a GPU's memory per process by default, so the second
  worker on the same GPU would fail. Give each an equal share unless the user chose one."""
  if "XLA_PYTHON_CLIENT_PREALLOCATE" not in os.environ:
    os.environ.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", f"{0.9 / processes:.3f}")


def _stackable_groups(runs: list[tuple]) -> list[list[tuple]]:
  """Splits (config, workdir) pairs into groups that can train together (`check_stackable`;
  baselines are fitted, so they stay alone), in order of first appearance."""
  groups: list[list[tuple]] = []
  for run in runs:
    fits = run[0].method not in baselines.METHODS and [g for g in groups if _stackable(g, run)]
    if fits:
      fits[0].append(run)
    else:
      groups.append([run])
  return groups


def _stackable(group: list[tuple], run: tuple) -> bool:
  # A group led by a baseline differs from any trained run in `method`: check_stackable says so.
  try:
    train.check_stackable([group[0][0], run[0]])
  except UserError:
    return False
  return True


def _run_results(run_dir: str) -> list[tuple[str, dict]]:
  """(directory, results.json) of a finished run, or of each finished `bits-<q>` sub-run."""
  dirs = [run_dir]
  if not os.path.exists(os.path.join(run_dir, "results.json")) and os.path.isdir(run_dir):
    subruns = sorted(
      (d for d in os.listdir(run_dir) if d.startswith("bits-")), key=lambda d: int(d[5:])
    )
    dirs = [os.path.join(run_dir, d) for d in subruns]
  found = []
  for d in dirs:
    path = os.path.join(d, "results.json")
    if os.path.exists(path):
      with open(path) as f:
        found.append((d, json.load(f)))
  return found


def report_workdir(workdir: str) -> list[dict]:
  """Rebuilds the tables and plots of a finished sweep or run from its saved results, without
  training (`launch.py --report`). Returns the collected results."""
  if os.path.exists(os.path.join(workdir, "sweep.json")):
    return report_sweep(workdir)
  results = [r for _, r in _run_results(workdir)]
  if not results:
    raise UserError(f"{workdir!r} holds no finished run (no results.json); train it first.")
  report.write_table(workdir, results)
  report.write_plots(workdir, results)
  return results


def report_sweep(workdir: str) -> list[dict]:
  """Rebuilds `table.md`, `summary.md` and per-bit-length plots of a sweep from its saved results
  (no training); runs not finished yet are left out. Runs trained with `eval.every` also get
  the time each needed to reach a test mAP (summary.md) and `learning_curve_<q>.png`. Returns
  the collected results."""
  with open(os.path.join(workdir, "sweep.json")) as f:
    runs = json.load(f)["runs"]
  located = [
    (run_dir, {**r, "overrides": run["overrides"]})
    for run in runs
    for run_dir, r in _run_results(os.path.join(workdir, run["name"]))
  ]
  results = [r for _, r in located]
  if not results:
    raise UserError(f"no run of the sweep in {workdir!r} has finished yet.")
  keys = swept_fields([run["overrides"] for run in runs])
  hio.write_text(os.path.join(workdir, "table.md"), report.results_table(results, keys))
  summary = report.paper_table(results, keys) + "\n" + summary_table(results, keys)
  curves = [report.learning_curve(run_dir, r) for run_dir, r in located]
  with_curves = any(len(c) > 1 for c in curves)  # some run evaluated during training
  if with_curves:
    summary += "\nTime to reach a test mAP\n\n" + report.time_to_reach_table(results, curves, keys)
  hio.write_text(os.path.join(workdir, "summary.md"), summary)
  for bits in sorted({r["bits"] for r in results}):
    same_bits = [(r, c) for r, c in zip(results, curves, strict=True) if r["bits"] == bits]
    bits_results, bits_curves = zip(*same_bits, strict=True)
    report.write_plots(workdir, bits_results, suffix=f"_{bits}", label_keys=keys)
    if with_curves:
      path = os.path.join(workdir, f"learning_curve_{bits}.png")
      report.write_learning_curves(path, bits_results, bits_curves, keys)
  write_examples(workdir, located, keys)
  return results


def example_runs(located: Sequence[tuple[str, dict]], keys: Sequence[str]) -> dict:
  """bits -> {`report.setting_label` -> run directory}: the first run (seed) of each method and
  swept setting at each bit length, the runs the example plots show."""
  first: dict = {}
  for run_dir, r in located:
    first.setdefault(r["bits"], {}).setdefault(report.setting_label(r, keys), run_dir)
  return first


def write_examples(
  workdir: str, located: Sequence[tuple[str, dict]], keys: Sequence[str], queries: int = 4
) -> None:
  """Per bit length, from the first run of each method and swept setting (`example_runs`):
  `outputs_<q>.png` (histogram of the real-valued outputs before binarisation) and
  `queries_<q>.png` (a few queries with their top 10 retrievals; needs the run's data source,
  skipped with a note when it cannot be loaded)."""
  pooled = None
  for bits, runs in example_runs(located, keys).items():
    codes = {label: dict(np.load(os.path.join(d, "codes.npz"))) for label, d in runs.items()}
    protocol = located[0][1]["protocol"]
    values = {label: c["query_values"] for label, c in codes.items() if "query_values" in c}
    if values:
      title = f"{protocol}, {bits} bits: outputs before binarisation (queries)"
      report.write_output_histogram(os.path.join(workdir, f"outputs_{bits}.png"), values, title)
    if pooled is None:
      try:
        with open(os.path.join(next(iter(runs.values())), "config.json")) as f:
          pooled, _ = train.prepare_data(ml_collections.ConfigDict(json.load(f)))
      except UserError as e:
        print(f"note: no example-query grid ({e})")
        return
    retrieved, query_images = {}, None
    for label, run_dir in runs.items():
      c, split = codes[label], np.load(os.path.join(run_dir, "split.npz"))
      chosen = np.linspace(0, len(c["query_codes"]) - 1, queries).astype(int)
      top, _ = retrieval.knn(c["query_codes"][chosen], c["database_codes"], 10)
      relevant = (c["query_labels"][chosen][:, None, :] & c["database_labels"][top]).any(-1)
      retrieved[label] = (pooled.images[split["database"][top]], relevant)
      query_images = pooled.images[split["query"][chosen]]
    title = f"{protocol}, {bits} bits: queries (left) and top 10 (green: relevant)"
    report.write_query_grid(
      os.path.join(workdir, f"queries_{bits}.png"), query_images, retrieved, title
    )


def summary_table(results: Sequence[dict], keys: Sequence[str]) -> str:
  """Markdown table of mean +- standard deviation over seeds of mAP and P(r<=2), one row per
  (method, protocol, bits, swept values other than the seed and the bit length)."""
  grouped = collections.defaultdict(list)
  varying = report.setting_keys(keys)
  for r in results:
    label = tuple(_format(r["overrides"].get(k, "")) for k in varying)
    grouped[(report.method_label(r), r["protocol"], r["bits"], label)].append(r)
  header = ["method", "protocol", "bits", *varying, "seeds", "mAP", "P(r<=2)"]
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  for (method, protocol, bits, label), group in grouped.items():
    cells = [method, protocol, str(bits), *label, str(len(group))]
    for metric in ("map", "precision_radius2"):
      values = np.array([r[metric] for r in group])
      spread = f" ± {values.std(ddof=1):.4f}" if len(values) > 1 else ""
      cells.append(f"{values.mean():.4f}{spread}")
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"
