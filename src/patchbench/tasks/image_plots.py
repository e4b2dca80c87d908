"""Pictures of an image classifier's behaviour: a grid of held-out images with predicted and true labels
(the Visual Transformers seed's "sample inference" figure). Drawing only: the task predicts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch


def prediction_grid(images: np.ndarray, labels: np.ndarray, probs: torch.Tensor, names: list[str], path: str | Path,
                    title: str = "") -> Path:
    """Draw `images` (N, H, W, C) uint8 with the predicted class of `probs` (N, classes) (green when right,
    red when wrong) and the true label; write a PNG to `path` and return it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    pred = probs.argmax(-1).numpy()

    cols = int(np.ceil(np.sqrt(len(images))))
    rows = int(np.ceil(len(images) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(2.2 * cols, 2.5 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i, ax in enumerate(axes.flat[:len(images)]):
        img = np.asarray(images[i])
        if img.shape[-1] == 1:
            ax.imshow(img[..., 0], cmap="gray", vmin=0, vmax=255)
        else:
            ax.imshow(img)
        ok = pred[i] == labels[i]
        ax.set_title(f"pred: {names[pred[i]]} ({probs[i, pred[i]]:.0%})\ntrue: {names[labels[i]]}",
                     fontsize=8, color="green" if ok else "red")
    acc = float(np.mean(pred == labels)) if len(labels) else 0.0
    fig.suptitle(f"{title + ': ' if title else ''}{int(np.sum(pred == labels))}/{len(labels)} right ({acc:.0%})", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(path)
    return path
