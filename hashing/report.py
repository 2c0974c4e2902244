"""Results tables (markdown) and plots (PNG) from `results.json` dictionaries."""

from __future__ import annotations

import io
import os
from collections.abc import Sequence

from hashing import io as hio


def results_table(results: Sequence[dict]) -> str:
  """One markdown row per run: method, protocol, bits, mAP, mAP@k, P(r<=2), train time."""
  map_at_keys = sorted({k for r in results for k in r.get("map_at", {})}, key=int)
  header = ["method", "protocol", "bits", "mAP"] + [f"mAP@{k}" for k in map_at_keys]
  header += ["P(r<=2)", "train s"]
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  for r in results:
    row = [r["method"], r["protocol"], str(r["bits"]), f"{r['map']:.4f}"]
    row += [f"{r['map_at'][k]:.4f}" if k in r.get("map_at", {}) else "" for k in map_at_keys]
    row += [f"{r['precision_radius2']:.4f}", f"{r['train_seconds']:.0f}"]
    lines.append("| " + " | ".join(row) + " |")
  return "\n".join(lines) + "\n"


def write_table(workdir: str, results: Sequence[dict]) -> str:
  table = results_table(results)
  hio.write_text(os.path.join(workdir, "table.md"), table)
  return table


def _save_figure(fig, path: str) -> None:
  buffer = io.BytesIO()
  fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
  hio.write_bytes(path, buffer.getvalue())


def write_plots(workdir: str, results: Sequence[dict]) -> list[str]:
  """Writes `pr_curve.png` (Hamming-radius precision-recall) and `precision_at_k.png`."""
  import matplotlib

  matplotlib.use("Agg")  # files only, no display
  import matplotlib.pyplot as plt

  paths = []
  for name, x_key, y_key, xlabel, ylabel, title in (
    ("pr_curve.png", "recall", "precision", "recall", "precision", "PR curve over Hamming radius"),
    ("precision_at_k.png", "k", "precision", "retrieved images k", "precision@k", "precision@k"),
  ):
    fig, ax = plt.subplots(figsize=(5, 4))
    for r in results:
      curve = r["pr_curve"] if name == "pr_curve.png" else r["precision_at_k"]
      ax.plot(curve[x_key], curve[y_key], marker=".", label=f"{r['method']} {r['bits']} bits")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(f"{results[0]['protocol']}: {title}")
    ax.grid(alpha=0.3)
    ax.legend()
    path = os.path.join(workdir, name)
    _save_figure(fig, path)
    plt.close(fig)
    paths.append(path)
  return paths
