"""Per-epoch scalars for TensorBoard (`--tensorboard`), so that a long run can be watched as it
trains: each run writes under `<out-dir>/tensorboard/<run>-<id>/`, and

    tensorboard --logdir <out-dir>/tensorboard

shows every run of the study. TensorBoard is an optional dependency (`pip install tensorboard`);
without it the flag stops the study before any work, in one line."""
from __future__ import annotations

import importlib.util
import math
from pathlib import Path

MISSING = ("--tensorboard needs the tensorboard package, which is not installed: pip install tensorboard "
           "(or pip install '.[tensorboard]'), or drop the flag")


def available() -> bool:
    return importlib.util.find_spec("tensorboard") is not None


def tag(key: str) -> str:
    """A training-log column's TensorBoard tag, grouped as TensorBoard shows them."""
    if key.startswith("w."):
        return f"lwsupcrd_weights/{key[2:]}"
    if key.endswith("_acc"):
        return f"accuracy/{key}"
    if key == "lr":
        return "optimizer/lr"
    if key == "epoch_seconds":
        return "time/epoch_seconds"
    return f"loss/{key}"


class EpochScalars:
    """Called with each epoch's row of the training log: its losses and their parts, learning rate,
    train (and, where measured, test) accuracy, LW-SupCRD's weights, and the images per second."""

    def __init__(self, folder: Path, images_per_epoch: int):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(folder))
        self.images = images_per_epoch

    def __call__(self, row: dict) -> None:
        step = int(row["epoch"])
        for key, value in row.items():
            if key != "epoch" and isinstance(value, (int, float)) and math.isfinite(value):
                self.writer.add_scalar(tag(key), float(value), step)
        if row.get("epoch_seconds"):
            self.writer.add_scalar("time/images_per_second", self.images / row["epoch_seconds"], step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class _Off:
    def __call__(self, row: dict) -> None:
        pass

    def close(self) -> None:
        pass


def epoch_scalars(enabled: bool, folder: Path, images_per_epoch: int) -> EpochScalars | _Off:
    """The run's scalar writer, or one that writes nothing when the flag is off."""
    return EpochScalars(folder, images_per_epoch) if enabled else _Off()
