"""The comparison and ablation configs in smoke mode, end to end through launch.py.

Apart from tests/test_sweeps.py (the sweep runner itself) so that pytest-xdist's
`--dist loadfile` spreads these long subprocess runs over another worker.
"""

import json
import subprocess
import sys

import pytest
from conftest import ROOT

from hashing import sweeps


def test_compare_config_runs_every_method_and_reports_without_training(tmp_path):
  command = [
    sys.executable,
    "launch.py",
    "--config=configs/compare.py:smoke,bits=8,seeds=1",  # every method
    f"--workdir={tmp_path}",
  ]
  out = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  for method in ("dsh", "dnnh", "cnnh", "cnnh+", "lsh", "itq", "lsh-features", "itq-features"):
    assert f"| {method} (ours) |" in out.stdout
  for method in ("dsh", "dnnh", "cnnh", "cnnh+", "lsh", "itq"):
    assert json.load(open(tmp_path / f"{method}-seed0" / "results.json"))["method"] == method
  for method in ("lsh", "itq"):
    features = json.load(open(tmp_path / f"{method}-features-seed0" / "results.json"))
    assert (features["method"], features["features"]) == (method, f"model:{tmp_path}/dsh-seed0")
  for name in ("outputs_8.png", "queries_8.png", "pr_curve_8.png", "precision_at_k_8.png"):
    assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG", name
  summary = (tmp_path / "summary.md").read_text()
  (tmp_path / "summary.md").unlink()
  out = subprocess.run(
    [*command, "--report"], cwd=ROOT, capture_output=True, text=True, timeout=120
  )
  assert out.returncode == 0, out.stderr[-3000:]
  assert (tmp_path / "summary.md").read_text() == summary


ABLATIONS = sweeps.load_config_module(str(ROOT / "configs" / "ablations.py"))


@pytest.mark.parametrize("study", ABLATIONS.STUDIES)
def test_every_ablation_study_builds_valid_configs(study):
  arg = f"study={study},smoke,seeds=2"
  base, entries = ABLATIONS.get_config(arg), ABLATIONS.get_sweep(arg)
  configs = [sweeps.apply_overrides(base, e, str(ROOT / "configs")) for e in entries]
  assert len({sweeps.run_name(e) for e in entries}) == len(entries) >= 4
  assert {c.seed for c in configs} == {0, 1}
  fields = sweeps.swept_fields(entries)
  assert fields[-1] == "seed" and len(fields) >= 2  # the studied field(s), then the seed


def test_ablation_sweep_runs_end_to_end(tmp_path):
  out = subprocess.run(
    [
      sys.executable,
      "launch.py",
      "--config=configs/ablations.py:study=head,smoke,seeds=1,bits=8",
      "--config.eval.every=10",  # a learning curve: one evaluation during the 20 steps
      f"--workdir={tmp_path}",
    ],
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert out.returncode == 0, out.stderr[-3000:]
  summary = (tmp_path / "summary.md").read_text()
  assert "| dnnh | fashion-mnist-embedded | 8 | dae | 1 |" in summary
  assert "| dnnh | fashion-mnist-embedded | 8 | fc | 1 |" in summary
  # Time to reach a test mAP (columns: ..., model.head, seed, evaluations during training):
  # no published number for this protocol
  times = summary.split("Time to reach a test mAP")[1]
  assert "| dnnh | 8 | dae | 0 | 1 |" in times and "| dnnh | 8 | fc | 0 | 1 |" in times
  assert "| none |" in times
  assert (tmp_path / "learning_curve_8.png").read_bytes()[:4] == b"\x89PNG"
