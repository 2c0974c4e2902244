"""Checkpoint and resume, a workdir bound to one config and one live process, NaN stops,
stalled-gradient warnings, unwritable workdirs."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import ROOT, load_config

from hashing import train
from hashing.errors import UserError

KILL_RUN = [
  "bits=8,smoke",
  "--config.train.steps=300",
  "--config.train.checkpoint_every=20",
  "--config.train.log_every=20",
]


def launch(workdir, arg, *overrides):
  return [
    sys.executable,
    "launch.py",
    f"--config=configs/dsh.py:{arg}",
    f"--workdir={workdir}",
    *overrides,
  ]


def test_sigkill_mid_training_then_rerun_resumes_to_the_same_codes(tmp_path):
  config = load_config("dsh", KILL_RUN[0])
  config.train.steps, config.train.checkpoint_every, config.train.log_every = 300, 20, 20
  [reference] = train.train_and_evaluate(config, str(tmp_path / "uninterrupted"))

  workdir = tmp_path / "killed"
  command = launch(workdir, *KILL_RUN)
  process = subprocess.Popen(
    command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
  )
  deadline = time.time() + 120
  checkpoints = workdir / "checkpoints"
  while time.time() < deadline:
    steps = [int(d) for d in os.listdir(checkpoints) if d.isdigit()] if checkpoints.exists() else []
    if steps and max(steps) >= 60:
      break
    time.sleep(0.02)
  process.send_signal(signal.SIGKILL)
  process.wait()
  assert not (workdir / "results.json").exists(), "the run finished before it could be killed"
  killed_at = max(int(d) for d in os.listdir(checkpoints) if d.isdigit())
  assert 60 <= killed_at < 300

  out = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-2000:]
  resumed = json.load(open(workdir / "results.json"))
  assert resumed["resumed_from_step"] >= killed_at
  first = np.load(tmp_path / "uninterrupted" / "codes.npz")
  second = np.load(workdir / "codes.npz")
  for key in ("query_codes", "database_codes"):
    np.testing.assert_array_equal(second[key], first[key])
  assert resumed["map"] == reference["map"]
  steps = [json.loads(line)["step"] for line in open(workdir / "metrics.jsonl")]
  assert steps == list(range(20, 301, 20))  # logged once each, nothing duplicated by the resume


def test_workdir_of_another_config_is_refused(tmp_path):
  config = load_config("dsh", "bits=8,smoke")
  train.train_and_evaluate(config, str(tmp_path))
  config.loss.alpha = 0.5
  with pytest.raises(UserError, match=r"different config \(loss.alpha: 0.01 there, 0.5 now\)"):
    train.train_and_evaluate(config, str(tmp_path))


def test_workdir_of_an_older_version_without_newer_fields_is_accepted(tmp_path):
  config = load_config("dsh", "bits=8,smoke")
  train.claim_workdir(config, str(tmp_path))
  saved = json.load(open(tmp_path / "config.json"))
  del saved["model"]["dtype"], saved["train"]["scan_steps"]  # fields a later version added
  (tmp_path / "config.json").write_text(json.dumps(saved))
  train.claim_workdir(config, str(tmp_path))  # no error
  saved["model"]["bits"] = 16  # a real difference still counts
  (tmp_path / "config.json").write_text(json.dumps(saved))
  with pytest.raises(UserError, match="model.bits"):
    train.claim_workdir(config, str(tmp_path))


def test_finished_run_is_not_trained_again(tmp_path):
  config = load_config("dsh", "bits=8,smoke")
  [first] = train.train_and_evaluate(config, str(tmp_path))
  mtime = os.path.getmtime(tmp_path / "codes.npz")
  [again] = train.train_and_evaluate(config, str(tmp_path))
  assert again == json.loads(json.dumps(first))
  assert os.path.getmtime(tmp_path / "codes.npz") == mtime


def test_diverging_loss_stops_naming_the_step(tmp_path):
  config = load_config("dsh", "bits=8,smoke")
  config.train.optimizer, config.train.learning_rate = "sgd", 1e6
  with pytest.raises(UserError, match=r"became .* at step \d+; stopped"):
    train.train_and_evaluate(config, str(tmp_path))
  assert not (tmp_path / "results.json").exists()


def test_collapsed_triplet_run_is_reported_as_stalled(tmp_path, capsys):
  # Batch-hard triplets at a high learning rate saturate every sigmoid output within ten
  # steps on this data: the loss sits at the margin with a zero gradient.
  config = load_config("dnnh", "bits=12,smoke,sampling=hard")
  config.train.learning_rate = 0.05
  [results] = train.train_and_evaluate(config, str(tmp_path))
  assert results["stalled_at_step"] is not None
  assert results["final_loss"] == pytest.approx(config.loss.margin, abs=1e-3)
  assert "training has stalled" in capsys.readouterr().err


def test_stalled_needs_every_gradient_norm_of_the_window_below_the_threshold():
  window = np.array([[1.0, 0.0], [1.0, train.STALLED_GRADIENT_NORM / 2]])
  assert train.stalled(window)
  window[0, 1] = 3 * train.STALLED_GRADIENT_NORM
  assert not train.stalled(window)


def test_unwritable_workdir_is_a_user_error(tmp_path):
  (tmp_path / "file").write_text("not a directory")
  with pytest.raises(UserError, match="cannot create workdir"):
    train.train_and_evaluate(load_config("dsh", "bits=8,smoke"), str(tmp_path / "file" / "run"))


def test_workdir_in_use_by_another_process_is_refused_until_it_exits(tmp_path):
  config = load_config("dsh", "bits=8,smoke")
  holder = subprocess.Popen(
    [
      sys.executable,
      "-c",
      "import sys, time; from hashing import train; train._lock_workdir(sys.argv[1]); "
      "print('locked', flush=True); time.sleep(60)",
      str(tmp_path),
    ],
    cwd=ROOT,
    stdout=subprocess.PIPE,
    text=True,
  )
  try:
    assert holder.stdout.readline().strip() == "locked"
    with pytest.raises(UserError, match=rf"in use by another running process \(pid {holder.pid}\)"):
      train.claim_workdir(config, str(tmp_path))
    assert not (tmp_path / "config.json").exists()  # refused before anything was written
  finally:
    holder.kill()
    holder.wait()
  train.claim_workdir(config, str(tmp_path))  # the lock went with the process
  train.claim_workdir(config, str(tmp_path))  # this process may claim its own workdir again
  assert (tmp_path / ".lock").read_text().strip() == str(os.getpid())
