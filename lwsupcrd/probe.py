"""Linear-probe evaluation: features of un-augmented images from the frozen backbone, computed
once, and a linear classifier trained on them."""
from __future__ import annotations

import time

import torch
import torch.nn.functional as F

from .data import DatasetInfo, Split, normalize
from .models import ModelWrapper


@torch.no_grad()
def embed(model: ModelWrapper, images: torch.Tensor, info: DatasetInfo, batch_size: int | None = None,
          channels_last: bool = False, amp: bool | None = None):
    """Backbone features (N, F), projections (N, P) and logits (N, C) of uint8 images, eval mode
    (bf16 autocast on CUDA unless `amp` says otherwise), in batches of 1024 on a GPU and 256 on a
    CPU (there 1.7x faster than 1024 for resnet8: bench/RESULTS.md)."""
    batch_size = batch_size or (1024 if images.device.type == "cuda" else 256)
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


def score(model: ModelWrapper, cfg: dict, train: Split, test: Split, info: DatasetInfo) -> dict:
    """A trained run's scores: the standard protocol's top-1 of the model's own classifier (float32,
    last epoch); otherwise the linear probe on the frozen backbone, and the run's own head where it
    has a trained one (a CE run's, or the original's online classifier: `head_test_acc`)."""
    cl = bool(cfg.get("channels_last"))
    if cfg.get("protocol") == "standard":
        logits = embed(model, test.images, info, channels_last=cl, amp=False)[2]
        return {"test_acc": float((logits.argmax(1) == test.labels).float().mean()) * 100}
    start = time.perf_counter()
    train_f, _, _ = embed(model, train.images, info, channels_last=cl)
    test_f, _, test_logits = embed(model, test.images, info, channels_last=cl)
    embedded = time.perf_counter()
    metrics = linear_probe(train_f, train.labels, test_f, test.labels, info.num_classes,
                           epochs=cfg["probe_epochs"], seed=cfg["seed"])
    metrics["embed_seconds"], metrics["probe_seconds"] = embedded - start, time.perf_counter() - embedded
    if cfg["method"] in ("ce", "undistilled", "published") or cfg.get("online_classifier"):  # read with its own head
        metrics["head_test_acc"] = float((test_logits.argmax(1) == test.labels).float().mean()) * 100
    return metrics


def probe_floors(random_student: ModelWrapper, train: Split, test: Split, info: DatasetInfo, epochs: int,
                 seed: int) -> dict:
    """What the probe reads without training, with the students' probe protocol: raw pixels and a
    randomly initialised student."""
    probe = dict(num_classes=info.num_classes, epochs=epochs, seed=seed)
    pixels = linear_probe(normalize(train.images, info).flatten(1), train.labels,
                          normalize(test.images, info).flatten(1), test.labels, **probe)
    random_init = linear_probe(embed(random_student, train.images, info)[0], train.labels,
                               embed(random_student, test.images, info)[0], test.labels, **probe)
    return {"train_size": len(train), "raw_pixels": pixels["probe_test_acc"],
            "random_student": random_init["probe_test_acc"]}
