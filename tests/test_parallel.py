"""Data parallelism on 8 simulated CPU devices: the same runs as on one device."""

import os
import subprocess
import sys
import textwrap

from conftest import ROOT

# Runs in a fresh interpreter: the device count is fixed when JAX starts.
SCRIPT = textwrap.dedent(
  """
  import json, sys
  import jax, numpy as np
  sys.path.insert(0, "tests")
  from conftest import load_config
  from hashing import parallel, train

  assert jax.device_count() == 8, jax.devices()
  workdir = sys.argv[1]
  for name, arg, scan in [("dsh", "bits=8,smoke", 1), ("dnnh", "bits=8,smoke,backbone=dsh", 1),
                          ("dsh", "bits=8,smoke", 4)]:
    outputs = []
    for data_parallel in (False, True):
      config = load_config(name, arg)
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
