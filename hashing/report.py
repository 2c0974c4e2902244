"""Results tables (markdown) and plots (PNG) from `results.json` dictionaries and the learning
curves in `metrics.jsonl`."""

from __future__ import annotations

import io
import os
from collections.abc import Sequence

import numpy as np

from hashing import io as hio


def method_label(result: dict) -> str:
  """A run's method as tables show it: a baseline on a trained model's features is
  `<method>-features`, so it stays apart from the same method on pixels."""
  features = result.get("features", "pixels")
  return result["method"] if features == "pixels" else f"{result['method']}-features"


def setting_keys(keys: Sequence[str]) -> list[str]:
  """The swept `keys` that tell settings apart: not the seed (the seeds of one setting are
  grouped) and not the bit length (tables show it in its own column)."""
  return [k for k in keys if k not in ("seed", "bits", "model.bits")]


def setting_label(result: dict, keys: Sequence[str]) -> str:
  """The run's method and the values it sets of the `setting_keys(keys)`, e.g.
  "dsh loss.alpha=0.01"."""
  overrides = result.get("overrides", {})
  settings = [k for k in setting_keys(keys) if k in overrides]
  return " ".join([method_label(result)] + [f"{k}={overrides[k]}" for k in settings])


def results_table(results: Sequence[dict], keys: Sequence[str] = ()) -> str:
  """One markdown row per run: method, protocol, bits, the swept `keys` (values from each
  result's `overrides`), mAP, mAP@k, P(r<=2), train time."""
  map_at_keys = sorted({k for r in results for k in r.get("map_at", {})}, key=int)
  header = ["method", "protocol", "bits", *keys, "mAP"] + [f"mAP@{k}" for k in map_at_keys]
  header += ["P(r<=2)", "train s"]
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  for r in results:
    row = [method_label(r), r["protocol"], str(r["bits"])]
    row += [str(r.get("overrides", {}).get(k, "")) for k in keys]
    row += [f"{r['map']:.4f}"]
    row += [f"{r['map_at'][k]:.4f}" if k in r.get("map_at", {}) else "" for k in map_at_keys]
    row += [f"{r['precision_radius2']:.4f}", f"{r['train_seconds']:.0f}"]
    lines.append("| " + " | ".join(row) + " |")
  return "\n".join(lines) + "\n"


# Published mAP (whole database) by protocol -> method -> bits:
# CNNH, CNNH+, DNNH, KSH, ITQ, LSH as quoted in the DNNH paper; DSH from the DSH paper.
PUBLISHED = {
  "cifar10-dnnh": {
    "CNNH": {12: 0.439, 24: 0.511, 32: 0.509, 48: 0.522},
    "CNNH+": {12: 0.465, 24: 0.521, 32: 0.521, 48: 0.532},
    "DNNH": {12: 0.552, 24: 0.566, 32: 0.558, 48: 0.581},
    "KSH": {12: 0.303, 24: 0.337, 32: 0.346, 48: 0.356},
    "ITQ": {12: 0.162, 24: 0.169, 32: 0.172, 48: 0.175},
    "LSH": {12: 0.121, 24: 0.126, 32: 0.120, 48: 0.120},
  },
  "cifar10-dsh": {"DSH": {12: 0.6157, 24: 0.6512, 36: 0.6607, 48: 0.6755}},
}


def paper_table(results: Sequence[dict], keys: Sequence[str] = ()) -> str:
  """The papers' layout: one row per method and setting of the swept `keys` (`setting_label`,
  e.g. "dsh loss.margin=24"), one column per bit length, whole-database mAP as mean ± std over
  the runs of that cell (seeds), then the published rows of the same protocol (marked
  "published")."""
  bits = sorted({r["bits"] for r in results})
  protocols = sorted({r["protocol"] for r in results})
  cells: dict = {}
  for r in results:
    cells.setdefault(setting_label(r, keys), {}).setdefault(r["bits"], []).append(r["map"])
  lines = [
    f"mAP over the whole database, {', '.join(protocols)}; ours: mean ± std over seeds (n)",
    "",
    "| method | " + " | ".join(f"{b} bits" for b in bits) + " |",
    "|---|" + "---|" * len(bits),
  ]
  for method, by_bits in cells.items():
    row = []
    for b in bits:
      values = np.array(by_bits.get(b, []))
      if not values.size:
        row.append("")
        continue
      spread = f" ± {values.std(ddof=1):.3f}" if values.size > 1 else ""
      row.append(f"{values.mean():.3f}{spread} ({values.size})")
    lines.append(f"| {method} (ours) | " + " | ".join(row) + " |")
  published = PUBLISHED.get(protocols[0], {}) if len(protocols) == 1 else {}
  for method, by_bits in published.items():
    row = [f"{by_bits[b]:.3f}" if b in by_bits else "" for b in bits]
    lines.append(f"| {method} (published) | " + " | ".join(row) + " |")
  return "\n".join(lines) + "\n"


def learning_curve(run_dir: str, result: dict) -> np.ndarray:
  """`[n, 3]` rows (step, training seconds, test mAP) of a finished run: the evaluations that
  `eval.every` logged into its metrics.jsonl, then the final model's (`result`, its
  results.json). A run without metrics.jsonl (a shallow baseline) has the final row only.

  Seconds count training (compilation included, evaluations not). A resumed run's clock starts
  again at 0 in the new process: it is continued from the last line logged before the restart.
  """
  records = hio.read_jsonl(os.path.join(run_dir, "metrics.jsonl"))
  rows, offset, last = [], 0.0, 0.0
  for r in records:
    if r["seconds"] + offset < last:  # a new process resumed the run
      offset = last
    last = r["seconds"] + offset
    if "eval_map" in r:
      rows.append((r["step"], last, r["eval_map"]))
  steps = max((r["step"] for r in records), default=0)
  rows.append((steps, result["train_seconds"] + offset, result["map"]))
  return np.array(rows, dtype=np.float64)


def first_reached(curve: np.ndarray, target: float) -> np.ndarray | None:
  """The first row (step, seconds, mAP) of a `learning_curve` at or above `target`, or None."""
  reached = np.flatnonzero(curve[:, 2] >= target)
  return curve[reached[0]] if reached.size else None


def time_to_reach_table(
  results: Sequence[dict], curves: Sequence[np.ndarray], keys: Sequence[str] = ()
) -> str:
  """Wall time to a given mAP, one row per run (e.g. explicit vs in-batch triplets).

  Two targets per bit length: the best published mAP of the protocol (DNNH's on
  `cifar10-dnnh`), and the final mAP of the first run of that bit length (the sweep's first
  setting, e.g. the paper's explicit triplets), with each run's time to it as a ratio to the
  first run's own (which may reach it at an evaluation before the end). A time is that of the
  first evaluation at or above the target, so it is only as fine as `eval.every`.
  """
  header = ["method", "bits", *keys, "evaluations during training", "final mAP"]
  header += ["target: best published", "seconds (step)"]
  header += ["target: first run's final mAP", "seconds (step)", "x first run's time"]
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  for bits in sorted({r["bits"] for r in results}):
    runs = [(r, c) for r, c in zip(results, curves, strict=True) if r["bits"] == bits]
    by_method = PUBLISHED.get(runs[0][0]["protocol"], {}).values()
    published = max((by_bits[bits] for by_bits in by_method if bits in by_bits), default=None)
    target = runs[0][1][-1, 2]  # the first run's final mAP
    first_seconds = first_reached(runs[0][1], target)[1]
    for r, c in runs:
      overrides = r.get("overrides", {})
      row = [method_label(r), str(bits), *(str(overrides.get(k, "")) for k in keys)]
      row += [str(len(c) - 1), f"{r['map']:.4f}"]
      if published is None:
        row += ["none", ""]
      else:
        hit = first_reached(c, published)
        row += [f"{published:.4f}", "not reached" if hit is None else _seconds_and_step(hit)]
      hit = first_reached(c, target)
      row += [f"{target:.4f}"]
      if hit is None:
        row += ["not reached", ""]
      else:
        row += [_seconds_and_step(hit), f"{hit[1] / first_seconds:.2f}"]
      lines.append("| " + " | ".join(row) + " |")
  return "\n".join(lines) + "\n"


def _seconds_and_step(row: np.ndarray) -> str:
  return f"{row[1]:.0f} ({row[0]:.0f})"


def write_learning_curves(
  path: str, results: Sequence[dict], curves: Sequence[np.ndarray], label_keys: Sequence[str] = ()
) -> None:
  """Test mAP against training seconds, one line per run (one bit length per file)."""
  plt = _pyplot()
  fig, ax = plt.subplots(figsize=(5, 4))
  for r, c in zip(results, curves, strict=True):
    ax.plot(c[:, 1], c[:, 2], marker=".", label=_label(r, label_keys))
  ax.set_xlabel("training seconds")
  ax.set_ylabel("mAP (whole database)")
  ax.set_title(f"{results[0]['protocol']}: test mAP during training")
  ax.grid(alpha=0.3)
  ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))  # beside the curves
  _save_figure(fig, path)
  plt.close(fig)


def write_table(workdir: str, results: Sequence[dict]) -> str:
  table = results_table(results)
  hio.write_text(os.path.join(workdir, "table.md"), table)
  return table


def _save_figure(fig, path: str) -> None:
  buffer = io.BytesIO()
  fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
  hio.write_bytes(path, buffer.getvalue())


def _label(result: dict, keys: Sequence[str]) -> str:
  overrides = result.get("overrides", {})
  swept = ", ".join(f"{k}={overrides[k]}" for k in keys if k in overrides)
  return f"{method_label(result)} {result['bits']} bits" + (f" ({swept})" if swept else "")


def write_plots(
  workdir: str, results: Sequence[dict], suffix: str = "", label_keys: Sequence[str] = ()
) -> list[str]:
  """Writes `pr_curve<suffix>.png` (Hamming-radius precision-recall) and
  `precision_at_k<suffix>.png`, one curve per result, labelled with its swept `label_keys`."""
  plt = _pyplot()
  paths = []
  for name, x_key, y_key, xlabel, ylabel, title in (
    ("pr_curve", "recall", "precision", "recall", "precision", "PR curve over Hamming radius"),
    ("precision_at_k", "k", "precision", "retrieved images k", "precision@k", "precision@k"),
  ):
    fig, ax = plt.subplots(figsize=(5, 4))
    for r in results:
      curve = r[name]
      ax.plot(curve[x_key], curve[y_key], marker=".", label=_label(r, label_keys))
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(f"{results[0]['protocol']}: {title}")
    ax.grid(alpha=0.3)
    ax.legend()
    path = os.path.join(workdir, f"{name}{suffix}.png")
    _save_figure(fig, path)
    plt.close(fig)
    paths.append(path)
  return paths


def _pyplot():
  import matplotlib

  matplotlib.use("Agg")  # files only, no display
  import matplotlib.pyplot as plt

  return plt


def write_output_histogram(path: str, values: dict[str, np.ndarray], title: str) -> None:
  """One histogram per method or setting of its real-valued outputs minus the binarisation
  threshold (`values`: label -> `[n, q]`), the picture of how close to binary each loss drives
  them; at most 4 panels per row."""
  plt = _pyplot()
  columns = min(4, len(values))
  rows = -(-len(values) // columns)
  fig, axes = plt.subplots(
    rows, columns, figsize=(2.6 * columns, 2.6 * rows), squeeze=False, layout="constrained"
  )
  for ax in axes.ravel()[len(values) :]:
    ax.set_visible(False)
  for ax, (label, v) in zip(axes.ravel(), values.items(), strict=False):
    ax.hist(np.ravel(v), bins=60, color="tab:blue")
    ax.axvline(0.0, color="black", linewidth=0.8)
    ax.set_title(label.replace(" ", "\n"), fontsize=8)  # one swept setting per line
    ax.set_yticks([])
  fig.suptitle(title, fontsize=10)
  fig.supxlabel("output - threshold (a bit is set where > 0)", fontsize=9)
  _save_figure(fig, path)
  plt.close(fig)


def write_query_grid(
  path: str,
  queries: np.ndarray,
  retrieved: dict[str, tuple[np.ndarray, np.ndarray]],
  title: str,
) -> None:
  """Example queries and their top retrievals per method.

  Args:
    queries: uint8 `[Q, H, W, C]` query images.
    retrieved: label -> (images uint8 `[Q, k, H, W, C]`, relevant bool `[Q, k]`); a relevant
      result gets a green frame, an irrelevant one a red frame.
  """
  plt = _pyplot()
  rows = [(q, label) for q in range(len(queries)) for label in retrieved]
  k = next(iter(retrieved.values()))[0].shape[1]
  height = 0.8 * len(rows) + 0.7  # inches: square tiles plus room for the title
  fig, axes = plt.subplots(len(rows), k + 1, figsize=(0.8 * (k + 1), height), squeeze=False)
  fig.subplots_adjust(wspace=0.08, hspace=0.08, top=1 - 0.6 / height)
  grey = queries.shape[-1] == 1
  show = lambda ax, image: ax.imshow(
    image[..., 0] if grey else image, cmap="gray" if grey else None
  )
  for row, (q, label) in enumerate(rows):
    images, relevant = retrieved[label]
    show(axes[row, 0], queries[q])
    axes[row, 0].set_ylabel(label, fontsize=6, rotation=0, ha="right", va="center")
    for col in range(k):
      ax = axes[row, col + 1]
      show(ax, images[q, col])
      for spine in ax.spines.values():
        spine.set_edgecolor("tab:green" if relevant[q, col] else "tab:red")
        spine.set_linewidth(2)
  for ax in axes.ravel():
    ax.set_xticks([])
    ax.set_yticks([])
  fig.suptitle(title, fontsize=9)
  _save_figure(fig, path)
  plt.close(fig)
