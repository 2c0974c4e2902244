import json

import numpy as np

from hashing import report, sweeps


def result(bits, map_):
  return {
    "method": "dsh",
    "protocol": "cifar10-dnnh",
    "bits": bits,
    "map": map_,
    "map_at": {"1000": 0.7},
    "precision_radius2": 0.4,
    "train_seconds": 12.3,
    "pr_curve": {"precision": [1.0, 0.5], "recall": [0.1, 0.9], "radius": [0, 1]},
    "precision_at_k": {"k": [1, 10], "precision": [0.9, 0.8]},
  }


def test_table_has_one_row_per_run():
  table = report.results_table([result(12, 0.51234), result(48, 0.6)])
  lines = table.splitlines()
  assert lines[0] == "| method | protocol | bits | mAP | mAP@1000 | P(r<=2) | train s |"
  assert lines[2] == "| dsh | cifar10-dnnh | 12 | 0.5123 | 0.7000 | 0.4000 | 12 |"
  assert len(lines) == 4


def swept(overrides, bits=48, map_=0.5):
  return {**result(bits, map_), "overrides": overrides}


# The output study's settings: alpha alone, or alpha with a sigmoid output and its own margin.
OUTPUT_STUDY = [
  swept({"loss.alpha": 0.01, "seed": 0}, map_=0.70),
  swept({"loss.alpha": 0.01, "seed": 1}, map_=0.68),
  swept({"loss.alpha": 0.0, "model.output": "sigmoid", "loss.margin": 24.0, "seed": 0}, map_=0.4),
]
OUTPUT_KEYS = ["loss.alpha", "model.output", "loss.margin", "seed"]


def test_paper_table_rows_name_only_the_settings_each_run_sets():
  rows = report.paper_table(OUTPUT_STUDY, OUTPUT_KEYS).splitlines()
  assert "| dsh loss.alpha=0.01 (ours) | 0.690 ± 0.014 (2) |" in rows
  assert "| dsh loss.alpha=0.0 model.output=sigmoid loss.margin=24.0 (ours) | 0.400 (1) |" in rows
  assert "| DNNH (published) | 0.581 |" in rows


def test_examples_show_the_first_seed_of_every_setting_at_each_length():
  located = [(f"run{i}", r) for i, r in enumerate(OUTPUT_STUDY)]
  located.append(("run3", swept({"loss.alpha": 0.01, "model.bits": 12, "seed": 0}, bits=12)))
  assert sweeps.example_runs(located, OUTPUT_KEYS + ["model.bits"]) == {
    48: {
      "dsh loss.alpha=0.01": "run0",
      "dsh loss.alpha=0.0 model.output=sigmoid loss.margin=24.0": "run2",
    },
    12: {"dsh loss.alpha=0.01": "run3"},
  }


def test_summary_of_a_code_length_sweep_shows_the_length_once():
  runs = [
    swept({"model.bits": b, "seed": s}, bits=b, map_=0.6 + s / 10) for b in (8, 16) for s in (0, 1)
  ]
  lines = sweeps.summary_table(runs, ["model.bits", "seed"]).splitlines()
  assert lines[0] == "| method | protocol | bits | seeds | mAP | P(r<=2) |"
  assert lines[2] == "| dsh | cifar10-dnnh | 8 | 2 | 0.6500 ± 0.0707 | 0.4000 ± 0.0000 |"


def test_output_histogram_wraps_more_than_four_panels_into_rows(tmp_path):
  import matplotlib.image

  def height_and_width(panels):
    rng = np.random.default_rng(0)
    values = {f"dsh loss.alpha={a}": rng.normal(size=(20, 8)) for a in range(panels)}
    path = str(tmp_path / f"outputs_{panels}.png")
    report.write_output_histogram(path, values, f"{panels} settings")
    return np.array(matplotlib.image.imread(path).shape[:2])

  two, six = height_and_width(2), height_and_width(6)  # 1 x 2 panels vs 2 rows x 4 panels
  assert np.all(six > 1.6 * two), (two, six)


def test_plots_are_png_files(tmp_path):
  paths = report.write_plots(str(tmp_path), [result(12, 0.5), result(48, 0.6)])
  assert [p.rsplit("/", 1)[1] for p in paths] == ["pr_curve.png", "precision_at_k.png"]
  for p in paths:
    assert open(p, "rb").read(4) == b"\x89PNG"


def test_learning_curve_reads_evaluations_and_continues_a_resumed_runs_clock(tmp_path):
  records = [
    {"step": 10, "seconds": 5.0, "loss": 1.0},
    {"step": 10, "seconds": 5.0, "eval_map": 0.3},
    {"step": 20, "seconds": 9.0, "loss": 0.9},
    # resumed from step 20 in a new process: its clock starts again
    {"step": 30, "seconds": 2.0, "loss": 0.8},
    {"step": 30, "seconds": 2.5, "eval_map": 0.4},
    {"step": 40, "seconds": 6.0, "loss": 0.7},
  ]
  (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
  curve = report.learning_curve(str(tmp_path), {"train_seconds": 6.0, "map": 0.45})
  np.testing.assert_allclose(curve, [[10, 5.0, 0.3], [30, 11.5, 0.4], [40, 15.0, 0.45]])
  # a shallow baseline (no metrics.jsonl): the final row only
  curve = report.learning_curve(str(tmp_path / "baseline"), {"train_seconds": 2.0, "map": 0.2})
  np.testing.assert_allclose(curve, [[0, 2.0, 0.2]])


def test_time_to_reach_gives_first_evaluation_at_or_above_each_target():
  # reaches its final mAP at step 200 already
  explicit = np.array([[100, 30.0, 0.30], [200, 60.0, 0.58], [300, 90.0, 0.58]])
  in_batch = np.array([[100, 10.0, 0.40], [200, 20.0, 0.59], [300, 30.0, 0.60]])
  collapsed = np.array([[100, 5.0, 0.10], [300, 15.0, 0.10]])
  runs = [
    {**result(48, 0.58), "overrides": {"loss.sampling": "random"}},
    {**result(48, 0.60), "overrides": {"loss.sampling": "semihard"}},
    {**result(48, 0.10), "overrides": {"loss.sampling": "hard"}},
  ]
  table = report.time_to_reach_table(runs, [explicit, in_batch, collapsed], ["loss.sampling"])
  lines = table.splitlines()
  assert len(lines) == 5
  # DNNH's published 0.581 at 48 bits; the first run's final mAP 0.58, first reached after 60 s
  assert lines[2] == (
    "| dsh | 48 | random | 2 | 0.5800 | 0.5810 | not reached | 0.5800 | 60 (200) | 1.00 |"
  )
  assert lines[3] == (
    "| dsh | 48 | semihard | 2 | 0.6000 | 0.5810 | 20 (200) | 0.5800 | 20 (200) | 0.33 |"
  )
  assert lines[4] == (
    "| dsh | 48 | hard | 1 | 0.1000 | 0.5810 | not reached | 0.5800 | not reached |  |"
  )
