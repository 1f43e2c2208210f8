"""Small torchvision models trained in PyTorch: stand-ins for a user's own models.

A classifier (torchvision's ResNet) and a detector (torchvision ResNet blocks with a CenterNet
head), each trained here in PyTorch on clean images, then handed to ``diffisp tune`` as a user
would hand theirs. Used by the tests and the measured comparisons (no downloads: random
initialisation and a short training run). Needs the ``diffisp[torch]`` extra.
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
    generator = torch.Generator().manual_seed(seed)

    def batch_loss(idx: Any) -> Any:
        flip = torch.rand(len(idx), generator=generator) < 0.5
        batch = torch.where(flip[:, None, None, None], x[idx].flip(-1), x[idx])
        return torch.nn.functional.cross_entropy(module(batch), y[idx])

    optimizer = torch.optim.Adam(module.parameters(), lr=lr)
    return _fit(module, len(x), batch_loss, optimizer, generator, epochs, batch_size, save=save)


def _fit(
    module: Any,
    num: int,
    batch_loss: Any,
    optimizer: Any,
    generator: Any,
    epochs: int,
    batch_size: int,
    *,
    schedule: Any = None,
    save: str | Path | None = None,
) -> Any:
    """The PyTorch minibatch loop of both trainers: ``epochs`` shuffles of ``num`` examples
    (``generator``), ``batch_loss(indices)`` per full batch, an optimiser step (and a
    ``schedule`` step); returns ``module`` in eval mode, its state dict saved to ``save``."""
    torch = require("torch")
    module.train()
    for _ in range(epochs):
        order = torch.randperm(num, generator=generator)
        for start in range(0, num - batch_size + 1, batch_size):
            loss = batch_loss(order[start : start + batch_size])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if schedule is not None:
                schedule.step()
    module.eval()
    if save is not None:
        torch.save(module.state_dict(), save)
    return module


def centernet_resnet(num_classes: int = 6) -> Any:
    """A small detector from torchvision's ResNet ``BasicBlock``: stride 2, 4, 8, back up to
    stride 4 (nearest upsampling + the stride-4 features), and a CenterNet head of
    ``num_classes + 4`` channels (heatmap logits, box ``w, h`` in cells, centre offset): the
    output :class:`~diffisp.models.external_tasks.ExternalCenterNet` reads. Six classes by
    default: the generated scenes' (:data:`diffisp.data.scenes.CLASSES`)."""
    torch = require("torch")
    from torchvision.models.resnet import BasicBlock

    nn = torch.nn

    def block(cin: int, cout: int, stride: int) -> Any:
        down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
        return BasicBlock(cin, cout, stride, downsample=down)

    class CenterNetResNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Sequential(
                nn.Conv2d(3, 32, 3, 2, 1, bias=False), nn.BatchNorm2d(32), nn.ReLU()
            )
            self.stage4 = block(32, 64, 2)
            self.stage8 = nn.Sequential(block(64, 128, 2), block(128, 128, 1))
            self.lateral = nn.Conv2d(64, 128, 1)
            self.head = nn.Sequential(
                nn.Conv2d(128, 64, 3, padding=1), nn.ReLU(), nn.Conv2d(64, num_classes + 4, 1)
            )
            with torch.no_grad():  # CenterNet's prior: every cell starts at p = 0.1
                self.head[-1].bias[:num_classes].fill_(-2.19)

        def forward(self, x: Any) -> Any:
            c4 = self.stage4(self.stem(x))
            up = nn.functional.interpolate(self.stage8(c4), scale_factor=2, mode="nearest")
            return self.head(torch.relu(up + self.lateral(c4)))

    return CenterNetResNet()


def train_detector(
    module: Any,
    images: np.ndarray,
    boxes: np.ndarray,
    labels: np.ndarray,
    *,
    epochs: int = 20,
    batch_size: int = 32,
    lr: float = 2e-3,
    seed: int = 0,
    save: str | Path | None = None,
) -> Any:
    """Train a CenterNet-head ``module`` in PyTorch on ``(N, H, W, 3)`` images in [0, 1] with
    padded ``boxes`` ``(N, M, 4)`` xyxy pixels and ``labels`` ``(N, M)`` (-1 = padding).

    The targets are encoded once by diffisp's own encoder (the same Gaussians, cells and
    offsets), and the loss is CenterNet's (focal heatmap + 0.1 size L1 + offset L1) written in
    PyTorch. Adam with a cosine decay; no augmentation. Returns the module in eval mode.
    """
    torch = require("torch")
    import jax.numpy as jnp

    from diffisp.models.detection_loss import OFFSET_WEIGHT, SIZE_WEIGHT, encode_targets

    torch.manual_seed(seed)
    x = torch.tensor(np.asarray(images, np.float32)).permute(0, 3, 1, 2).contiguous()
    module.eval()
    with torch.no_grad():
        probe = module(x[:1]).shape  # (1, C + 4, Ho, Wo)
    grid, num_classes = tuple(probe[2:]), int(probe[1]) - 4
    stride = x.shape[2] // grid[0]
    encoded = encode_targets(
        jnp.asarray(boxes, jnp.float32),
        jnp.asarray(labels),
        None,
        grid=grid,
        stride=stride,
        num_classes=num_classes,
    )
    t = {k: torch.tensor(np.asarray(v)) for k, v in encoded._asdict().items()}
    t["index"] = t["index"].long()
    steps = epochs * (len(x) // batch_size)
    generator = torch.Generator().manual_seed(seed)

    def batch_loss(idx: Any) -> Any:
        out = module(x[idx]).permute(0, 2, 3, 1)
        heat, size, offset = out[..., :-4], out[..., -4:-2], out[..., -2:]
        loss = _focal(heat, t["heatmap"][idx], t["weight"][idx])
        mask, cells = t["mask"][idx], t["index"][idx]
        for pred, target, weight in (
            (size, t["size"][idx], SIZE_WEIGHT),
            (offset, t["offset"][idx], OFFSET_WEIGHT),
        ):
            at = pred.reshape(len(idx), -1, 2).gather(1, cells[..., None].expand(-1, -1, 2))
            l1 = ((at - target).abs() * mask[..., None]).sum() / (2 * mask.sum()).clamp(min=1)
            loss = loss + weight * l1
        return loss

    optimizer = torch.optim.Adam(module.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, max(steps, 1))
    return _fit(
        module, len(x), batch_loss, optimizer, generator, epochs, batch_size,
        schedule=schedule, save=save,
    )  # fmt: skip


def _focal(logits: Any, heatmap: Any, weight: Any) -> Any:
    """CenterNet's penalty-reduced focal loss in PyTorch (as ``detection_loss.focal_loss``)."""
    torch = require("torch")
    p = torch.sigmoid(logits)
    positive = heatmap == 1.0
    pos = -torch.nn.functional.logsigmoid(logits) * (1 - p) ** 2
    neg = -torch.nn.functional.logsigmoid(-logits) * p**2 * (1 - heatmap) ** 4
    total = (weight * torch.where(positive, pos, neg)).sum()
    return total / positive.sum().clamp(min=1)
