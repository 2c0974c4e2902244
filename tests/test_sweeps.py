"""The sweep runner on the real configs in smoke mode: sub-workdirs, skip on restart, processes,
vmap, report (the compare and ablation configs end to end: tests/test_compare.py)."""

import json
import os

import numpy as np
import pytest
from conftest import ROOT, load_config, with_flip_and_crop

from hashing import sweeps, train
from hashing.errors import UserError

ENTRIES = [
  {"loss.alpha": 0.0, "seed": 0},
  {"loss.alpha": 0.0, "seed": 1},
  {"loss.alpha": 0.1, "seed": 0},
]


@pytest.fixture(scope="module")
def alpha_sweep(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("sweep")
  base = with_flip_and_crop(load_config("dsh", "bits=8,smoke"))
  results = sweeps.run_sweep(base, ENTRIES, str(workdir), config_dir=str(ROOT / "configs"))
  return workdir, results


def test_each_run_trains_its_overrides_into_its_own_workdir(alpha_sweep):
  workdir, results = alpha_sweep
  assert [r["overrides"] for r in results] == ENTRIES
  for entry in ENTRIES:
    run_dir = workdir / sweeps.run_name(entry)
    config = json.load(open(run_dir / "config.json"))
    assert (config["loss"]["alpha"], config["seed"]) == (entry["loss.alpha"], entry["seed"])
  assert sweeps.run_name(ENTRIES[2]) == "loss.alpha=0.1,seed=0"
  codes = [np.load(workdir / sweeps.run_name(e) / "codes.npz")["database_codes"] for e in ENTRIES]
  assert not np.array_equal(codes[0], codes[1])  # another seed, other codes


def test_tables_list_every_run_and_the_spread_over_seeds(alpha_sweep):
  workdir, results = alpha_sweep
  table = (workdir / "table.md").read_text()
  assert table.splitlines()[0].startswith("| method | protocol | bits | loss.alpha | seed | mAP")
  assert table.count("| dsh |") == 3
  summary = (workdir / "summary.md").read_text()
  maps = [r["map"] for r in results[:2]]
  mean, std = np.mean(maps), np.std(maps, ddof=1)
  assert f"| dsh | fashion-mnist-embedded | 8 | 0.0 | 2 | {mean:.4f} ± {std:.4f} |" in summary
  # The papers' layout: one row per setting (the seeds of a setting averaged, not the settings)
  assert f"| dsh loss.alpha=0.0 (ours) | {mean:.3f} ± {std:.3f} (2) |" in summary
  assert f"| dsh loss.alpha=0.1 (ours) | {results[2]['map']:.3f} (1) |" in summary
  assert (workdir / "pr_curve_8.png").stat().st_size > 0


def test_restart_skips_finished_runs_and_report_rebuilds_the_same_tables(alpha_sweep):
  workdir, results = alpha_sweep
  stamps = [os.path.getmtime(workdir / sweeps.run_name(e) / "results.json") for e in ENTRIES]
  table = (workdir / "table.md").read_text()
  again = sweeps.run_sweep(
    with_flip_and_crop(load_config("dsh", "bits=8,smoke")),
    ENTRIES,
    str(workdir),
    config_dir=str(ROOT / "configs"),
  )
  assert again == results
  assert stamps == [
    os.path.getmtime(workdir / sweeps.run_name(e) / "results.json") for e in ENTRIES
  ]
  (workdir / "table.md").unlink()
  assert sweeps.report_workdir(str(workdir)) == results
  assert (workdir / "table.md").read_text() == table


def test_parallel_processes_give_the_same_codes_as_sequential_runs(alpha_sweep, tmp_path):
  workdir, _ = alpha_sweep
  base = with_flip_and_crop(load_config("dsh", "bits=8,smoke"))
  sweeps.run_sweep(base, ENTRIES[:2], str(tmp_path), config_dir=str(ROOT / "configs"), processes=2)
  for entry in ENTRIES[:2]:
    name = sweeps.run_name(entry)
    np.testing.assert_array_equal(
      np.load(tmp_path / name / "codes.npz")["database_codes"],
      np.load(workdir / name / "codes.npz")["database_codes"],
    )


def test_parallel_workers_share_one_gpu_memory_unless_the_user_chose(monkeypatch):
  monkeypatch.delenv("XLA_PYTHON_CLIENT_MEM_FRACTION", raising=False)
  monkeypatch.delenv("XLA_PYTHON_CLIENT_PREALLOCATE", raising=False)
  sweeps._share_accelerator(4)
  assert os.environ["XLA_PYTHON_CLIENT_MEM_FRACTION"] == "0.225"
  monkeypatch.setenv("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.5")
  sweeps._share_accelerator(4)
  assert os.environ["XLA_PYTHON_CLIENT_MEM_FRACTION"] == "0.5"
  monkeypatch.delenv("XLA_PYTHON_CLIENT_MEM_FRACTION")
  monkeypatch.setenv("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
  sweeps._share_accelerator(4)
  assert "XLA_PYTHON_CLIENT_MEM_FRACTION" not in os.environ


@pytest.mark.parametrize(
  "entries, message",
  [
    ([{"loss.alpfa": 0.1}], "no field 'loss.alpfa'"),
    ([{"train.epochs": "many"}], "train.epochs"),
    ([{"seed": 1}, {"seed": 1}], "twice"),
    ([], "no runs"),
  ],
)
def test_bad_sweeps_are_user_errors_before_any_training(tmp_path, entries, message):
  with pytest.raises(UserError, match=message):
    sweeps.run_sweep(load_config("dsh", "bits=8,smoke"), entries, str(tmp_path))
  assert not (tmp_path / "sweep.json").exists()


VMAP_ENTRIES = [
  {"seed": 0, "loss.alpha": 0.01},
  {"seed": 1, "loss.alpha": 0.1},
  {"seed": 0, "loss.margin": 8.0, "train.learning_rate": 3e-4},
]


def test_vmap_sweep_gives_the_results_of_separate_runs(tmp_path):
  base = with_flip_and_crop(load_config("dsh", "bits=8,smoke"))
  base.data.split_seed = 0  # one split for every seed: the runs can share one vmapped step
  configs = str(ROOT / "configs")
  together = sweeps.run_sweep(
    base, VMAP_ENTRIES, str(tmp_path / "vmap"), config_dir=configs, vmap=True
  )
  alone = sweeps.run_sweep(base, VMAP_ENTRIES, str(tmp_path / "alone"), config_dir=configs)
  assert [r["trained_together"] for r in together] == [3, 3, 3]
  assert [r["trained_together"] for r in alone] == [1, 1, 1]
  for entry, a, b in zip(VMAP_ENTRIES, together, alone, strict=True):
    name = sweeps.run_name(entry)
    assert a["map"] == pytest.approx(b["map"], abs=2e-3)
    losses = [
      [json.loads(line)["loss"] for line in open(tmp_path / d / name / "metrics.jsonl")]
      for d in ("vmap", "alone")
    ]
    np.testing.assert_allclose(losses[0], losses[1], rtol=1e-4)
    codes = [np.load(tmp_path / d / name / "codes.npz")["query_values"] for d in ("vmap", "alone")]
    np.testing.assert_allclose(codes[0], codes[1], rtol=1e-3, atol=1e-3)


def test_runs_that_cannot_share_a_step_are_refused():
  base = load_config("dsh", "bits=8,smoke")
  other_seed = load_config("dsh", "bits=8,smoke")
  other_seed.seed = 1
  with pytest.raises(UserError, match="split_seed"):
    train.check_stackable([base, other_seed])
  other_batch = load_config("dsh", "bits=8,smoke")
  other_batch.train.batch_size = 16
  with pytest.raises(UserError, match="train.batch_size"):
    train.check_stackable([base, other_batch])
