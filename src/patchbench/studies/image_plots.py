"""Pictures of an image classifier's behaviour: a grid of held-out images with predicted and true labels
(the Visual Transformers seed's "sample inference" figure)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn


def prediction_grid(task, model: nn.Module, device: torch.device, path: str | Path, n: int = 16, title: str = "") -> Path:
    """Draw the first `n` held-out images of `task` with the model's prediction (green when right, red
    when wrong) and the true label; write a PNG to `path` and return it. Deterministic: same images."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    images, labels = task.val.images(slice(0, n)), task.val.labels[:n]
    was_training = model.training
    model.eval()
    logits = task.predict(model, device, images)  # (n, classes)
    model.train(was_training)
    probs = torch.softmax(logits, -1).cpu()
    pred = probs.argmax(-1).numpy()
    names = task.classes

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
