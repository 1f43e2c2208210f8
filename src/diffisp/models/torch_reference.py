"""A small torchvision classifier trained in PyTorch: a stand-in for a user's own model.

Used by the tests and the measured comparison of ``diffisp tune`` (no downloads: random
initialisation and a short training run on clean images). Needs the ``diffisp[torch]`` extra.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from diffisp.models.external import require


def resnet10(num_classes: int = 10) -> Any:
    """torchvision's ResNet with one BasicBlock per stage (4.9 M weights): ResNet-18's layout
    at a fraction of its cost, for 32x32 inputs."""
    require("torch")
    from torchvision.models.resnet import BasicBlock, ResNet

    return ResNet(BasicBlock, [1, 1, 1, 1], num_classes=num_classes)


def resnet18(num_classes: int = 10) -> Any:
    """torchvision's ResNet-18, randomly initialised (no downloaded weights)."""
    require("torch")
    from torchvision.models import resnet18 as build

    return build(weights=None, num_classes=num_classes)


def train_classifier(
    module: Any,
    images: np.ndarray,
    labels: np.ndarray,
    *,
    epochs: int = 5,
    batch_size: int = 64,
    lr: float = 1e-3,
    seed: int = 0,
    save: str | Path | None = None,
) -> Any:
    """Train ``module`` in PyTorch on ``(N, H, W, 3)`` images in [0, 1] (Adam, cross-entropy,
    random flips); returns it in eval mode, its state dict saved to ``save`` if given."""
    torch = require("torch")
    torch.manual_seed(seed)
    x = torch.tensor(np.asarray(images, np.float32)).permute(0, 3, 1, 2).contiguous()
    y = torch.tensor(np.asarray(labels, np.int64))
    optimizer = torch.optim.Adam(module.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    module.train()
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=generator)
        for start in range(0, len(x) - batch_size + 1, batch_size):
            idx = order[start : start + batch_size]
            batch = x[idx]
            flip = torch.rand(len(idx), generator=generator) < 0.5
            batch = torch.where(flip[:, None, None, None], batch.flip(-1), batch)
            loss = torch.nn.functional.cross_entropy(module(batch), y[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    module.eval()
    if save is not None:
        torch.save(module.state_dict(), save)
    return module
