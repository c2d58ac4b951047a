"""LIMoE's signature analysis: which experts take image tokens and which take text, and how often routing works.

For every MoE layer it counts, per expert, the image and text tokens whose first choice it was, and draws each
expert as a bar split into its image share (red) and text share (blue), as in the paper's figure. The routing
success rate is the share of (non-padding) tokens whose first choice was granted.
"""
import os
from typing import Dict, List

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  pylint: disable=g-import-not-at-top
import numpy as np  # noqa: E402  pylint: disable=g-import-not-at-top

MODALITIES = ("image", "text")


def accumulate(totals, routing: Dict[str, List[Dict[str, np.ndarray]]], num_experts: int):
  """Adds one batch's routing (from ContrastiveLIMoE.routing) to totals[layer][modality] counters."""
  for modality in MODALITIES:
    for layer, stats in enumerate(routing[modality]):
      entry = totals.setdefault(layer, {m: {"tokens": np.zeros(num_experts), "kept": 0.0, "valid": 0.0}
                                        for m in MODALITIES})[modality]
      valid = stats["valid"] > 0
      entry["tokens"] += np.bincount(stats["expert"][valid], minlength=num_experts)
      entry["kept"] += float(np.sum(stats["kept"][valid]))
      entry["valid"] += float(np.sum(valid))
  return totals


def summarize(totals) -> Dict[str, object]:
  """Per layer: each expert's share of image tokens, and the success rate per modality."""
  layers = []
  for layer in sorted(totals):
    image, text = totals[layer]["image"]["tokens"], totals[layer]["text"]["tokens"]
    share = image / np.maximum(image + text, 1)
    layers.append({"image_share": share.tolist(), "image_tokens": image.tolist(), "text_tokens": text.tolist(),
                   **{f"success_{m}": totals[layer][m]["kept"] / max(totals[layer][m]["valid"], 1)
                      for m in MODALITIES}})
  return {"layers": layers}


def plot(summary, path: str, block_indices) -> None:
  """One panel per MoE layer: experts sorted by image share, bars split into image (red) and text (blue)."""
  layers = summary["layers"]
  fig, panels = plt.subplots(1, len(layers), figsize=(4.2 * len(layers), 3.4), squeeze=False)
  for panel, layer, block in zip(panels[0], layers, block_indices):
    share = np.array(layer["image_share"])
    used = (np.array(layer["image_tokens"]) + np.array(layer["text_tokens"])) > 0
    order = np.lexsort((-share, ~used))  # used experts by image share, then the unused ones
    x = np.arange(len(share))
    panel.bar(x, np.where(used, share, 0)[order], color="#d62728", label="image")
    panel.bar(x, np.where(used, 1 - share, 0)[order], bottom=share[order], color="#1f77b4", label="text")
    panel.bar(x, np.where(used, 0, 1)[order], color="#dddddd", hatch="//", edgecolor="#999999",
              label="no tokens")
    for xi, s, u in zip(x, share[order], used[order]):
      panel.text(xi, 0.02, f"{100 * s:.0f}%" if u else "unused", ha="center", va="bottom", fontsize=7,
                 color="white" if u else "#555555", rotation=90)
    panel.set_xticks(x, [str(e) for e in order], fontsize=7)
    panel.set_xlabel("expert (sorted by image share)")
    panel.set_ylim(0, 1)
    panel.set_title(f"block {block}: success image {100 * layer['success_image']:.0f}%, "
                    f"text {100 * layer['success_text']:.0f}%", fontsize=8)
  panels[0][0].set_ylabel("share of the expert's tokens")
  panels[0][0].legend(loc="upper right", fontsize=7)
  fig.suptitle("LIMoE: image vs text tokens per expert (first choices)", fontsize=10)
  fig.tight_layout()
  os.makedirs(os.path.dirname(path), exist_ok=True)
  fig.savefig(path, dpi=120)
  plt.close(fig)


def table(summary, block_indices) -> str:
  """The same figures as text."""
  lines = []
  for layer, block in zip(summary["layers"], block_indices):
    lines.append(f"block {block}: routing success image {100 * layer['success_image']:.1f}%, "
                 f"text {100 * layer['success_text']:.1f}%")
    for e, (share, i, t) in enumerate(zip(layer["image_share"], layer["image_tokens"], layer["text_tokens"])):
      shown = f"{100 * share:.0f}% image" if i + t else "unused"
      lines.append(f"  expert {e}: {int(i):6d} image, {int(t):6d} text tokens  ({shown})")
  return "\n".join(lines)
