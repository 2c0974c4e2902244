"""Data parallelism on 8 simulated CPU devices: the same runs as on one device."""

import json
import os
import socket
import subprocess
import sys
import textwrap

import numpy as np
from conftest import ROOT, load_config, with_flip_and_crop

from hashing import train

# Runs in a fresh interpreter: the device count is fixed when JAX starts.
SCRIPT = textwrap.dedent(
  """
  import json, sys
  import jax, numpy as np
  sys.path.insert(0, "tests")
  from conftest import load_config, with_flip_and_crop
  from hashing import parallel, train

  assert jax.device_count() == 8, jax.devices()
  workdir = sys.argv[1]
  # (The scanned-chunk path over a mesh: test_two_processes_match_one_process.)
  for name, arg, scan in [("dsh", "bits=8,smoke", 1), ("dnnh", "bits=8,smoke,backbone=dsh", 1)]:
    outputs = []
    for data_parallel in (False, True):
      config = with_flip_and_crop(load_config(name, arg))
      config.train.data_parallel, config.train.scan_steps = data_parallel, scan
      config.train.steps, config.train.log_every = 6, 1
      run_dir = f"{workdir}/{name}-{scan}-{data_parallel}"
      [result] = train.train_and_evaluate(config, run_dir)
      losses = [json.loads(l)["loss"] for l in open(run_dir + "/metrics.jsonl")]
      values = np.load(run_dir + "/codes.npz")["query_values"]
      outputs.append((np.array(losses), values, result["map"]))
    (l1, v1, m1), (l8, v8, m8) = outputs
    np.testing.assert_allclose(l8, l1, rtol=1e-4)
    np.testing.assert_allclose(v8, v1, rtol=1e-3, atol=1e-4)
    assert abs(m8 - m1) < 2e-3, (m8, m1)
  config = load_config("dsh", "bits=8,smoke")
  mesh = parallel.data_mesh(config, 32)
  assert mesh.devices.size == 8
  sharded = parallel.shard({"x": np.arange(32 * 3).reshape(32, 3)}, mesh, 0)["x"]
  assert len(sharded.addressable_shards) == 8 and sharded.addressable_shards[0].data.shape == (4, 3)
  try:
    parallel.data_mesh(config, 30)
  except Exception as e:
    assert "multiple of 8" in str(e), e
  else:
    raise AssertionError("a batch of 30 over 8 devices was accepted")
  print("OK")
  """
)


def test_data_parallel_on_eight_devices_matches_one_device(tmp_path):
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu")
  out = subprocess.run(
    [sys.executable, "-c", SCRIPT, str(tmp_path)],
    cwd=ROOT,
    env=env,
    capture_output=True,
    text=True,
    timeout=600,
  )
  assert out.returncode == 0 and "OK" in out.stdout, out.stderr[-3000:]


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def test_two_processes_match_one_process(tmp_path):
  """A multi-host run on one machine (2 processes x 2 CPU devices, jax.distributed over gloo):
  the same losses and codes as one process on one device, files written once (by process 0),
  and a second start resumes from the checkpoint the processes saved together."""
  command = [
    sys.executable,
    "launch.py",
    "--config=configs/cnnh.py:cnnh+,bits=8,smoke",
    "--config.train.steps=6",
    "--config.train.log_every=1",
    "--config.train.scan_steps=3",  # device-resident data + sharded indices: the GPU/TPU path
    "--config.augment.flip=True",  # augmentation inside the sharded step
    "--config.augment.crop_padding=2",
  ]
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2", JAX_PLATFORMS="cpu")

  def run_two(workdir):
    address = f"localhost:{_free_port()}"
    procs = [
      subprocess.Popen(
        [
          *command,
          f"--workdir={workdir}",
          f"--coordinator_address={address}",
          "--num_processes=2",
          f"--process_id={i}",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
      )
      for i in range(2)
    ]
    outputs = [p.communicate(timeout=600) for p in procs]
    for p, (_, err) in zip(procs, outputs, strict=True):
      assert p.returncode == 0, err[-3000:]
    return [out for out, _ in outputs]

  multi = tmp_path / "two-processes"
  out0, out1 = run_two(multi)
  assert "| cnnh+ |" in out0 and "| cnnh+ |" not in out1  # process 0 reports for both

  single = tmp_path / "one-process"
  config = with_flip_and_crop(load_config("cnnh", "cnnh+,bits=8,smoke"))
  config.train.steps, config.train.log_every, config.train.scan_steps = 6, 1, 3
  train.train_and_evaluate(config, str(single))
  lines = [json.loads(line) for line in open(multi / "metrics.jsonl")]
  assert [r["step"] for r in lines] == list(range(1, 7))  # each line once: one writer
  reference = [json.loads(line)["loss"] for line in open(single / "metrics.jsonl")]
  np.testing.assert_allclose([r["loss"] for r in lines], reference, rtol=1e-4)
  values = np.load(multi / "codes.npz")["query_values"]
  np.testing.assert_allclose(values, np.load(single / "codes.npz")["query_values"], atol=1e-4)

  # A second start of an unfinished run restores the step-6 checkpoint on both processes.
  (multi / "results.json").unlink()
  run_two(multi)
  np.testing.assert_array_equal(np.load(multi / "codes.npz")["query_values"], values)
