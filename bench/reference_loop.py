"""The plain training loop the speed work is measured against (benchmarks only, never the study).

It trains the same runs with the same losses, optimisers, schedules and augmentation distribution
as `lwsupcrd.train.fit`, the way such loops are commonly written: PIL images through per-image
torchvision transforms in DataLoader workers, float32, contiguous layout, the teacher under
`no_grad`, the loss read with `.item()` every step. It has `fit`'s signature so a benchmark can
put it in the study's place; it keeps no resume state.
"""
from __future__ import annotations

import time

import numpy as np
import torch
import torch.nn.functional as F

from lwsupcrd.data import DatasetInfo, Split
from lwsupcrd.losses import crd_loss, lw_supcrd_loss, supcon_loss
from lwsupcrd.memory_bank import MomentumMemoryBank
from lwsupcrd.models import ModelWrapper
from lwsupcrd.optimizers import build_optimizer, build_scheduler, trainable_parameters


class _Views(torch.utils.data.Dataset):
    def __init__(self, train: Split, info: DatasetInfo, views: int):
        from torchvision import transforms

        self.arrays = train.images.cpu().permute(0, 2, 3, 1).numpy()
        self.labels = train.labels.cpu().numpy()
        self.mode = "L" if info.channels == 1 else "RGB"
        self.views = views
        self.tf = transforms.Compose([transforms.RandomCrop(info.size, padding=4), transforms.RandomHorizontalFlip(),
                                      transforms.ToTensor(), transforms.Normalize(info.mean, info.std)])

    def __len__(self):
        return len(self.arrays)

    def __getitem__(self, i):
        from PIL import Image

        a = self.arrays[i]
        img = Image.fromarray(a[..., 0] if self.mode == "L" else a, self.mode)
        return tuple(self.tf(img) for _ in range(self.views)) + (int(self.labels[i]), i)


def reference_fit(run_name: str, cfg: dict, model: ModelWrapper, train: Split, info: DatasetInfo,
                  device: torch.device, teacher: ModelWrapper | None = None, resume_path=None, on_epoch=None,
                  progress: bool = True, bank: MomentumMemoryBank | None = None, compile_mode: str | None = None,
                  workers: int = 2) -> list[dict]:
    if compile_mode is not None:
        raise ValueError("the reference loop runs eagerly; drop --compile")
    method = cfg["method"]
    views = 1 if method == "ce" else 2
    torch.manual_seed(cfg["seed"])
    np.random.seed(cfg["seed"])
    loader = torch.utils.data.DataLoader(_Views(train, info, views), batch_size=cfg["batch_size"], shuffle=True,
                                         drop_last=True, num_workers=workers, persistent_workers=workers > 0)
    if cfg.get("bank_negatives") and bank is None:
        bank = MomentumMemoryBank(len(train), teacher.projection[-1].out_features, train.labels,
                                  momentum=cfg["bank_momentum"], seed=cfg["seed"], device=device)
    params = trainable_parameters(cfg, model, teacher)
    optimizer = build_optimizer(cfg, params, fused=device.type == "cuda")
    scheduler = build_scheduler(cfg, optimizer)
    history = []
    for epoch in range(cfg["epochs"]):
        model.train()
        if method == "projection":
            model.backbone.eval()
        if teacher is not None:
            teacher.backbone.eval()
        start, total, correct, seen, steps = time.perf_counter(), 0.0, 0, 0, 0
        for *xs, y, idx in loader:
            x = torch.cat(xs).to(device)
            y, idx = y.to(device), idx.to(device)
            labels = y.repeat(views)
            if method in ("ce", "undistilled"):
                logits = model.backbone(x)
                loss = F.cross_entropy(logits, labels)
                correct += (logits.argmax(1) == labels).sum().item()
                seen += len(labels)
            elif method == "projection":
                with torch.no_grad():
                    features = model.backbone.forward_features(x)
                loss = supcon_loss(model.project(features), labels, cfg["temperature"])
            elif method == "supcon":
                loss = supcon_loss(model(x)[1], labels, cfg["temperature"])
            else:
                z = model(x)[1]
                with torch.no_grad():
                    features = teacher.backbone.forward_features(x)
                    probs = torch.softmax(teacher.classifier(features), 1)
                t = teacher.project(features)
                keys = key_labels = key_ids = None
                if bank is not None:
                    keys, key_labels, key_ids = bank.sample(cfg["bank_negatives"])
                if method == "crd":
                    loss = crd_loss(z, t, idx.repeat(2), cfg["temperature"], keys, key_ids)
                else:
                    loss = lw_supcrd_loss(z, t, labels, probs, cfg["alpha"], cfg["beta"], cfg["temperature"],
                                          cfg["adaptive_beta"], keys, key_labels)
                if bank is not None:
                    b = len(y)
                    bank.update(idx, ((t[:b] + t[b:]) / 2).detach())
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item()
            steps += 1
        seconds = time.perf_counter() - start
        row = {"epoch": epoch + 1, "loss": total / steps, "lr": optimizer.param_groups[0]["lr"],
               "epoch_seconds": seconds, "images_per_second": steps * cfg["batch_size"] / seconds}
        if seen:
            row["train_acc"] = correct / seen * 100
        scheduler.step()
        history.append(row)
        if on_epoch is not None:
            on_epoch(row)
    return history
