"""End-to-end runs of the real configs in smoke mode, on the embedded Fashion-MNIST subset."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from conftest import CIFAR10_DIR, ROOT, load_config, needs_cifar10, with_flip_and_crop

from hashing import metrics, models, objectives, optim, steps, train
from hashing.errors import UserError


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("dsh"))
  [results] = train.train_and_evaluate(load_config("dsh", "bits=16,smoke"), workdir)
  return workdir, results


def test_run_writes_every_workdir_file(smoke_run):
  workdir, _ = smoke_run
  for name in (
    "config.json",
    "split.npz",
    "metrics.jsonl",
    "codes.npz",
    "params.msgpack",
    "results.json",
    "table.md",
    "pr_curve.png",
    "precision_at_k.png",
  ):
    assert os.path.getsize(os.path.join(workdir, name)) > 0, name
  assert not [f for f in os.listdir(workdir) if f.endswith(".tmp")]
  with open(os.path.join(workdir, "pr_curve.png"), "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"
  records = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
  assert [r["step"] for r in records] == [5, 10, 15, 20]
  assert all(np.isfinite(r["loss"]) and r["images_per_sec"] > 0 for r in records)


def test_results_match_codes_and_split(smoke_run):
  workdir, results = smoke_run
  assert json.load(open(os.path.join(workdir, "results.json"))) == json.loads(json.dumps(results))
  for key in ("method", "protocol", "bits", "map", "map_at", "precision_radius2", "train_seconds"):
    assert key in results
  assert (results["method"], results["protocol"], results["bits"]) == (
    "dsh",
    "fashion-mnist-embedded",
    16,
  )
  assert results["evaluated"] == "final model"
  assert results["stalled_at_step"] is None  # a healthy run is not reported as stalled
  codes = np.load(os.path.join(workdir, "codes.npz"))
  split = np.load(os.path.join(workdir, "split.npz"))
  assert codes["query_codes"].dtype == np.uint8 and codes["query_codes"].shape == (100, 2)
  assert codes["database_codes"].shape == (split["database"].size, 2) == (2000, 2)
  assert codes["query_labels"].shape == (100, 10) and codes["database_labels"].dtype == np.uint8
  assert np.intersect1d(split["query"], split["database"]).size == 0
  assert np.intersect1d(split["query"], split["train"]).size == 0
  # The reported mAP is the one the saved codes give.
  again = metrics.evaluate(
    codes["query_codes"],
    codes["database_codes"],
    codes["query_labels"],
    codes["database_labels"],
    num_bits=16,
  )
  assert again["map"] == pytest.approx(results["map"], abs=1e-12)
  # Even 20 steps beat chance (a random ranking gives about the class frequency, 0.1).
  assert results["map"] > 0.15


def test_same_seed_same_codes_other_seed_other_codes(smoke_run, tmp_path):
  workdir, _ = smoke_run
  config = load_config("dsh", "bits=16,smoke")
  train.train_and_evaluate(config, str(tmp_path / "again"))
  config.seed = 1
  train.train_and_evaluate(config, str(tmp_path / "seed1"))
  first = np.load(os.path.join(workdir, "codes.npz"))["database_codes"]
  np.testing.assert_array_equal(np.load(tmp_path / "again" / "codes.npz")["database_codes"], first)
  assert not np.array_equal(np.load(tmp_path / "seed1" / "codes.npz")["database_codes"], first)


def test_train_step_compiles_once_and_lowers_the_loss():
  config = load_config("dsh", "bits=8,smoke")
  model = models.build_model(config.model)
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (16, 28, 28, 1), dtype=np.uint8)
  labels = np.eye(4, dtype=np.uint8)[rng.integers(0, 4, 16)]
  optimizer = optim.make_optimizer(config.train, 10)
  params = model.init(jax.random.key(0), images)
  state = optimizer.init(params)
  config.augment.crop_padding, config.augment.flip = 0, False
  step = steps.make_train_step(objectives.make_objective(config, model), optimizer, config.augment)
  hyper = objectives.hyperparameters(config)
  first = None
  batch = {"images": images, "labels": labels}
  for i in range(10):
    params, state, loss, _ = step(params, state, batch, jax.random.key(i), hyper)
    first = float(loss) if first is None else first
  assert step._cache_size() == 1
  assert float(loss) < first


@pytest.mark.parametrize("optimizer", ["adam", "adamw", "sgd"])
def test_weight_decay_exclude_leaves_the_named_modules_undecayed(optimizer):
  config = load_config("dsh", "bits=8,smoke")
  config.train.optimizer, config.train.weight_decay = optimizer, 0.5
  config.train.warmup_steps, config.train.schedule = 0, "constant"
  config.train.weight_decay_exclude = "head"
  params = models.build_model(config.model).init(jax.random.key(0), np.zeros((1, 28, 28, 1)))
  tx = optim.make_optimizer(config.train, 10)
  zero = jax.tree_util.tree_map(np.zeros_like, params)  # no loss: only the decay moves weights
  updates, _ = tx.update(zero, tx.init(params), params)

  def check(path, update, param):
    decayed = np.any(np.asarray(update) != 0)
    expected = "'head'" not in jax.tree_util.keystr(path) and np.any(np.asarray(param) != 0)
    assert decayed == expected, path  # (biases start at 0: nothing to decay)

  jax.tree_util.tree_map_with_path(check, updates, params)
  config.train.weight_decay_exclude = "head,encoder"
  with pytest.raises(UserError, match="encoder"):
    optim.make_optimizer(config.train, 10).init(params)


def test_launch_multi_bit_smoke_prints_table_and_writes_subdirs(tmp_path):
  out = subprocess.run(
    [
      sys.executable,
      "launch.py",
      "--config=configs/dsh.py:bits=8/16,smoke",
      f"--workdir={tmp_path}",
    ],
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert out.returncode == 0, out.stderr[-2000:]
  assert "| dsh | fashion-mnist-embedded | 8 |" in out.stdout
  assert "| dsh | fashion-mnist-embedded | 16 |" in out.stdout
  for bits in (8, 16):
    assert (tmp_path / f"bits-{bits}" / "results.json").exists()
  assert (tmp_path / "table.md").read_text().count("| dsh |") == 2


@pytest.mark.parametrize(
  "args, phrase",
  [
    (
      ["--config=configs/dsh.py:bits=8,smoke", "--config.data.source=npz:no/such/dir"],
      "no/such/dir",
    ),
    (["--config=configs/dsh.py:bits=8,smoke", "--config.train.epoch=3"], "epochs"),
    (["--config=configs/dsh.py:colour=red"], "unknown config argument"),
    (["--config=configs/no_such_method.py"], "no_such_method.py"),
    (["--config=configs/dsh.py:bits=8,smoke", "--process_id=1"], "--num_processes"),
    (["--config=configs/compare.py:smoke", "--processes=2", "--distributed"], "multi-host"),
  ],
)
def test_launch_reports_user_errors_in_one_line(tmp_path, args, phrase):
  out = subprocess.run(
    [sys.executable, "launch.py", *args, f"--workdir={tmp_path}"],
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=120,
  )
  assert out.returncode == 2
  assert "Traceback" not in out.stderr
  error_lines = [line for line in out.stderr.splitlines() if line.startswith("error: ")]
  assert len(error_lines) == 1 and phrase in error_lines[0]


@pytest.mark.parametrize(
  "field, value, message",
  [
    ("train.batch_size", 1, "batch_size"),
    ("loss.margin", -1.0, "margin"),
    ("model.bits", 0, "bits"),
    ("train.learning_rate", 0.0, "learning_rate"),
    ("train.optimizer", "lbfgs", "optimizer"),
    ("augment.cutout", -8, "cutout"),
    ("augment.color_jitter", 1.5, "color_jitter"),
  ],
)
def test_impossible_config_values_are_user_errors(tmp_path, field, value, message):
  config = load_config("dsh", "bits=8,smoke")
  section, key = field.split(".")
  config[section][key] = value
  with pytest.raises(UserError, match=message):
    train.train_and_evaluate(config, str(tmp_path))


@needs_cifar10
def test_cifar10_smoke_run(tmp_path, monkeypatch):
  monkeypatch.setenv("HASHING_DATA_DIR", str(CIFAR10_DIR.parent))
  [results] = train.train_and_evaluate(
    load_config("dsh", "data=cifar10-dnnh,bits=12,smoke"), str(tmp_path)
  )
  assert (results["protocol"], results["num_queries"], results["num_database"]) == (
    "cifar10-dnnh",
    100,
    2000,
  )
  assert results["pixel_mean"][0] == pytest.approx(
    125.3, abs=8
  )  # CIFAR-10 red-channel mean (300 train images)


def test_reevaluate_a_finished_run_gives_its_numbers(smoke_run):
  workdir, results = smoke_run
  again = train.reevaluate(workdir)
  assert again["map"] == pytest.approx(results["map"], abs=1e-12)
  assert json.load(open(os.path.join(workdir, "reevaluation.json")))["map"] == again["map"]


def test_reevaluate_with_flip_average_reports_it_and_keeps_the_runs_codes(smoke_run):
  workdir, results = smoke_run
  codes_path = os.path.join(workdir, "codes.npz")
  before = open(codes_path, "rb").read()
  flipped = train.reevaluate(workdir, flip_average=True)
  assert flipped["flip_average"] is True and 0 < flipped["map"] <= 1
  assert flipped["map"] != pytest.approx(results["map"], abs=1e-6)  # other codes
  assert open(codes_path, "rb").read() == before
  assert json.load(open(os.path.join(workdir, "reevaluation.json")))["flip_average"] is True


def test_eval_every_logs_a_learning_curve_and_reports_the_final_model(tmp_path):
  config = load_config("dsh", "bits=8,smoke")
  config.eval.every = 10
  [results] = train.train_and_evaluate(config, str(tmp_path))
  records = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
  curve = [r for r in records if "eval_map" in r]
  assert [r["step"] for r in curve] == [10]  # not at the last step: that is results.json
  assert 0 < curve[0]["eval_map"] <= 1 and curve[0]["seconds"] < results["train_seconds"]
  assert [r["step"] for r in records if "loss" in r] == [5, 10, 15, 20]
  assert results["evaluated"] == "final model"


def _losses_and_values(workdir):
  losses = [json.loads(line)["loss"] for line in open(os.path.join(workdir, "metrics.jsonl"))]
  return np.array(losses), np.load(os.path.join(workdir, "codes.npz"))["query_values"]


@pytest.mark.parametrize(
  "name, arg, runs",
  [
    ("dsh", "bits=8,smoke", 1),
    ("dnnh", "bits=8,smoke,backbone=dsh", 1),
    ("cnnh", "cnnh+,bits=8,smoke", 2),
  ],
)
def test_scanned_chunks_on_device_data_train_like_the_step_loop(tmp_path, name, arg, runs):
  """The accelerator path (lax.scan over chunks of steps, batches gathered on the device) and
  the CPU path (a loop over a jitted step) give the same run; also for runs trained together
  (CNNH+: per-run stage-1 targets). Few steps: the two compile differently, and the hinge
  losses amplify rounding differences after ~6 steps (measured: equal to 6e-8 until then)."""
  trained = {}
  for scan in (1, 4):
    configs = []
    for seed in range(runs):
      config = with_flip_and_crop(load_config(name, arg))
      config.seed, config.data.split_seed, config.train.scan_steps = seed, 0, scan
      config.train.steps, config.train.log_every = 6, 1  # chunks of 4 + 2 steps
      configs.append(config)
    dirs = [str(tmp_path / f"scan{scan}-run{k}") for k in range(runs)]
    train.train_together(configs, dirs)
    trained[scan] = [_losses_and_values(d) for d in dirs]
  for (loop_losses, loop_values), (scan_losses, scan_values) in zip(*trained.values(), strict=True):
    np.testing.assert_allclose(scan_losses, loop_losses, rtol=1e-5)
    np.testing.assert_allclose(scan_values, loop_values, rtol=1e-3, atol=1e-4)


def test_bfloat16_smoke_run_trains(tmp_path):
  config = load_config("dsh", "bits=16,smoke")
  config.model.dtype = "bfloat16"
  [results] = train.train_and_evaluate(config, str(tmp_path))
  assert results["map"] > 0.15  # chance is 0.1; the float32 smoke run reaches about 0.2
