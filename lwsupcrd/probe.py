"""Linear-probe evaluation: features of un-augmented images from the frozen backbone, computed
once, and a linear classifier trained on them."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .data import DatasetInfo, normalize
from .models import ModelWrapper


@torch.no_grad()
def embed(model: ModelWrapper, images: torch.Tensor, info: DatasetInfo, batch_size: int = 1024,
          channels_last: bool = False, amp: bool | None = None):
    """Backbone features (N, F), projections (N, P) and logits (N, C) of uint8 images, eval mode
    (bf16 autocast on CUDA unless `amp` says otherwise)."""
    was_training = model.training
    model.eval()
    feats, projs, logits = [], [], []
    use_amp = images.device.type == "cuda" if amp is None else amp
    for start in range(0, len(images), batch_size):
        x = normalize(images[start:start + batch_size], info)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(images.device.type, dtype=torch.bfloat16, enabled=use_amp):
            f, p, l = model(x)
        feats.append(f.float())
        projs.append(p.float())
        logits.append(l.float())
    model.train(was_training)
    return torch.cat(feats), torch.cat(projs), torch.cat(logits)


def linear_probe(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor,
                 num_classes: int, epochs: int = 30, lr: float = 1e-3, batch_size: int = 256,
                 seed: int = 0) -> dict[str, float]:
    """Train a linear classifier on standardised features with Adam and a cosine schedule.

    Returns test and train accuracy (%) and their gap (train - test)."""
    mean, std = train_x.mean(0, keepdim=True), train_x.std(0, keepdim=True).clamp_min(1e-6)
    train_x, test_x = (train_x - mean) / std, (test_x - mean) / std
    gen = torch.Generator(device=train_x.device).manual_seed(seed)
    head = torch.nn.Linear(train_x.shape[1], num_classes, device=train_x.device)
    with torch.no_grad():
        bound = 1 / train_x.shape[1] ** 0.5
        head.weight.uniform_(-bound, bound, generator=gen)
        head.bias.zero_()
    optimizer = torch.optim.Adam(head.parameters(), lr=lr)
    n = len(train_x)
    steps = max(1, (n + batch_size - 1) // batch_size)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs * steps)
    for _ in range(epochs):
        perm = torch.randperm(n, generator=gen, device=train_x.device)
        for s in range(steps):
            idx = perm[s * batch_size:(s + 1) * batch_size]
            loss = F.cross_entropy(head(train_x[idx]), train_y[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
    with torch.no_grad():
        test_acc = float((head(test_x).argmax(1) == test_y).float().mean()) * 100
        train_acc = float((head(train_x).argmax(1) == train_y).float().mean()) * 100
    return {"probe_test_acc": test_acc, "probe_train_acc": train_acc, "probe_gap": train_acc - test_acc}
