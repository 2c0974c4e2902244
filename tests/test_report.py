from hashing import report


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


def test_plots_are_png_files(tmp_path):
  paths = report.write_plots(str(tmp_path), [result(12, 0.5), result(48, 0.6)])
  assert [p.rsplit("/", 1)[1] for p in paths] == ["pr_curve.png", "precision_at_k.png"]
  for p in paths:
    assert open(p, "rb").read(4) == b"\x89PNG"
