"""The training loop shared by every run: teacher cross-entropy, the teacher's projection head,
and the students (undistilled, SupCon, CRD, LW-SupCRD, with or without a memory bank).

The split stays on the device as uint8; each step draws a batch from a seeded permutation and
augments it there. Each method's step returns `(loss, parts, correct)`, where `parts` names the
loss terms; those names are the columns of the training log. After every epoch the complete
training state goes to a resume checkpoint, so rerunning after a kill continues bit for bit.
"""
from __future__ import annotations

import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .checkpoint import CheckpointError, atomic_write, safe_load
from .data import DatasetInfo, Split, crop_flip, crop_flip_params
from . import distributed
from .distributed import all_reduce_sum, average_gradients, current, gather, gather_with_grad
from .losses import crd_loss, lw_supcrd_loss, supcon_loss
from .memory_bank import MomentumMemoryBank
from .models import ModelWrapper

METHODS = ("ce", "projection", "undistilled", "supcon", "crd", "lwsupcrd")
# torch.compile modes; "reduce-overhead" adds CUDA graphs on a GPU
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
RESUME_FORMAT = "lwsupcrd-resume-v1"


class NonFiniteError(RuntimeError):
    """A loss or gradient became NaN or infinite; training stopped before saving anything from it."""


class TrainingInterrupted(RuntimeError):
    """Ctrl-C during training; the resume checkpoint of the last finished epoch is on disk."""


@dataclass
class Batch:
    """This rank's shard of a global batch, its views already augmented on the device."""

    x: torch.Tensor  # (views * b, C, H, W) normalised: all first views, then all second views
    labels: torch.Tensor  # (b,)
    slots: torch.Tensor  # (b,) position in the training set: instance id and memory-bank slot


@dataclass
class Networks:
    """The network calls the steps make, each compiled by torch.compile when asked for."""

    forward: Callable  # x -> (features, projections, logits) of the trained model
    logits: Callable  # x -> logits
    features: Callable  # x -> backbone features
    teacher_features: Callable | None

    @classmethod
    def of(cls, model: ModelWrapper, teacher: ModelWrapper | None, compile_mode: str | None) -> "Networks":
        calls = (model, model.backbone, model.backbone.forward_features,
                 teacher.backbone.forward_features if teacher is not None else None)
        if compile_mode is not None:
            if compile_mode not in COMPILE_MODES:
                raise ValueError(f"unknown compile mode {compile_mode!r}; choose from {', '.join(COMPILE_MODES)}")
            # compiled lazily at first call, each call its own graph: a step compiles only what it uses
            calls = tuple(torch.compile(f, mode=compile_mode) if f is not None else None for f in calls)
        return cls(*calls)


@dataclass(frozen=True)
class Execution:
    """How the loop runs on its device, never what it computes. `for_device` gives the CUDA branch
    its settings; a test forces them on the CPU so that a GPU run is not their first meeting."""

    fused_optimizer: bool  # one fused kernel per optimizer step
    step_checks: bool  # read loss and gradient finiteness every step (a host sync; free on the CPU)
    mark_cudagraph_steps: bool  # tell CUDA graphs where each step begins (compile mode reduce-overhead)

    @classmethod
    def for_device(cls, device: torch.device, compile_mode: str | None = None) -> "Execution":
        cuda = device.type == "cuda"
        return cls(fused_optimizer=cuda, step_checks=not cuda,
                   mark_cudagraph_steps=cuda and compile_mode == "reduce-overhead")


@dataclass
class StepContext:
    cfg: dict
    nets: Networks
    model: ModelWrapper
    teacher: ModelWrapper | None
    bank: MomentumMemoryBank | None
    step_checks: bool  # check finiteness every step (free on CPU); on CUDA once per epoch
    extra: dict = field(default_factory=dict)


def step_ce(ctx, batch):
    logits = ctx.nets.logits(batch.x)
    loss = F.cross_entropy(logits.float(), batch.labels)
    return loss, {"ce": loss}, (logits.argmax(1) == batch.labels).sum(), len(batch.labels)


def step_undistilled(ctx, batch):
    labels = batch.labels.repeat(2)
    logits = ctx.nets.logits(batch.x)
    loss = F.cross_entropy(logits.float(), labels)
    return loss, {"ce": loss}, (logits.argmax(1) == labels).sum(), len(labels)


def step_projection(ctx, batch):
    with torch.inference_mode():
        features = ctx.nets.features(batch.x)
    z = gather_with_grad(ctx.model.project(features.clone()))
    loss = supcon_loss(z, gather(batch.labels.repeat(2)), ctx.cfg["temperature"], validate=False)
    return loss, {"supcon": loss}, None, 0


def step_supcon(ctx, batch):
    _, z, _ = ctx.nets.forward(batch.x)
    loss = supcon_loss(gather_with_grad(z), gather(batch.labels.repeat(2)), ctx.cfg["temperature"], validate=False)
    return loss, {"supcon": loss}, None, 0


def _teacher_keys(ctx, x):
    with torch.inference_mode():
        features = ctx.nets.teacher_features(x)
        probs = torch.softmax(ctx.teacher.classifier(features).float(), dim=1)
    t = ctx.teacher.project(features.clone())  # the teacher's head keeps training
    return t, probs.clone()


def _distill(ctx, batch, loss_name):
    cfg = ctx.cfg
    _, z_local, _ = ctx.nets.forward(batch.x)
    t_local, probs = _teacher_keys(ctx, batch.x)
    z, t = gather_with_grad(z_local), gather_with_grad(t_local)  # every rank's anchors and keys
    labels, slots, probs = gather(batch.labels.repeat(2)), gather(batch.slots.repeat(2)), gather(probs)
    bank_keys = bank_labels = bank_ids = None
    if ctx.bank is not None:
        bank_keys, bank_labels, bank_ids = ctx.bank.sample(cfg["bank_negatives"])
    if loss_name == "crd":
        loss = crd_loss(z, t, slots, cfg["temperature"], bank_keys, bank_ids, validate=False)
    else:
        loss = lw_supcrd_loss(z, t, labels, probs, cfg["alpha"], cfg["beta"], cfg["temperature"],
                              cfg["adaptive_beta"], bank_keys, bank_labels, validate=False)
    if ctx.bank is not None:  # the mean of the two views' keys, for every image of the global batch
        b = len(batch.slots)
        ctx.extra["bank_update"] = (gather(batch.slots), gather(((t_local[:b] + t_local[b:]) / 2).detach()))
    return loss, {loss_name: loss}, None, 0


STEPS: dict[str, Callable] = {
    "ce": step_ce,
    "undistilled": step_undistilled,
    "projection": step_projection,
    "supcon": step_supcon,
    "crd": lambda ctx, batch: _distill(ctx, batch, "crd"),
    "lwsupcrd": lambda ctx, batch: _distill(ctx, batch, "lw_supcrd"),
}


def trainable_parameters(method: str, model: ModelWrapper, teacher: ModelWrapper | None) -> list[nn.Parameter]:
    if method == "projection":
        return list(model.projection.parameters())
    params = list(model.parameters())
    if method in ("crd", "lwsupcrd"):
        params += list(teacher.projection.parameters())
    return params


def build_optimizer(cfg: dict, params, fused: bool = False) -> torch.optim.Optimizer:
    if cfg["optimizer"] == "sgd":
        return torch.optim.SGD(params, lr=cfg["lr"], momentum=cfg.get("momentum", 0.9),
                               weight_decay=cfg["weight_decay"], nesterov=False, fused=fused or None)
    if cfg["optimizer"] == "adam":
        return torch.optim.Adam(params, lr=cfg["lr"], weight_decay=cfg["weight_decay"], fused=fused or None)
    raise ValueError(f"unknown optimizer {cfg['optimizer']!r}; choose sgd or adam")


def build_scheduler(cfg: dict, optimizer) -> torch.optim.lr_scheduler.LRScheduler:
    if cfg["schedule"] == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg["epochs"])
    if cfg["schedule"] == "constant":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: 1.0)
    raise ValueError(f"unknown schedule {cfg['schedule']!r}; choose cosine or constant")


def rng_state(generator: torch.Generator) -> dict:
    np_state = np.random.get_state()
    state = {"python": random.getstate(), "torch": torch.get_rng_state(), "augment": generator.get_state(),
             "numpy": {"key": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                       "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])}}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict, generator: torch.Generator) -> None:
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    generator.set_state(state["augment"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["key"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def frozen_snapshot(module: nn.Module) -> dict[str, torch.Tensor]:
    """Copies of every weight and BatchNorm statistic, to prove later that nothing moved."""
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def check_frozen(run_name: str, before: dict[str, torch.Tensor], module: nn.Module) -> None:
    after = module.state_dict()
    moved = [k for k, v in before.items() if not torch.equal(v, after[k])]
    if moved:
        raise RuntimeError(f"[{run_name}] the frozen teacher backbone changed during distillation: "
                           + ", ".join(moved[:5]) + (" ..." if len(moved) > 5 else ""))


def fit(run_name: str, cfg: dict, model: ModelWrapper, train: Split, info: DatasetInfo, device: torch.device,
        teacher: ModelWrapper | None = None, resume_path: str | Path | None = None,
        on_epoch: Callable[[dict], None] | None = None, progress: bool = True,
        bank: MomentumMemoryBank | None = None, compile_mode: str | None = None,
        execution: Execution | None = None) -> list[dict]:
    """Train `model` (and, for distillation, the teacher's projection head) for cfg["epochs"].

    `train` must already be on `device`. Returns one row per epoch. Writes `resume_path` after each
    epoch (rank 0 under torchrun) and resumes from it when it exists and was written with the same
    `cfg`. With `bank_negatives` in cfg a memory bank is made, unless the caller passes `bank`.
    Under torchrun, cfg["batch_size"] is the global batch, split evenly across the ranks.
    `compile_mode` runs the networks through torch.compile (see COMPILE_MODES); it is how the
    run executes, not what it computes, so it is not part of `cfg`; so is `execution` (default:
    `Execution.for_device(device, compile_mode)`).
    """
    ddp = current()
    method = cfg["method"]
    if method not in STEPS:
        raise ValueError(f"unknown method {method!r}; choose from {', '.join(STEPS)}")
    if method in ("crd", "lwsupcrd") and teacher is None:
        raise ValueError(f"method {method} needs a teacher")
    n, batch_size = len(train), cfg["batch_size"]
    if not 2 <= batch_size <= n:
        raise ValueError(f"batch_size must lie in [2, {n}] (the training set size), got {batch_size}")
    if batch_size % ddp.world_size:
        raise ValueError(f"batch_size {batch_size} must divide evenly over {ddp.world_size} processes")
    local = batch_size // ddp.world_size
    shard = slice(ddp.rank * local, (ddp.rank + 1) * local)

    generator = torch.Generator(device=device)
    generator.manual_seed(cfg["seed"])
    if cfg.get("bank_negatives") and bank is None:
        bank = MomentumMemoryBank(n, teacher.projection[-1].out_features, train.labels,
                                  momentum=cfg["bank_momentum"], seed=cfg["seed"], device=device)
    params = trainable_parameters(method, model, teacher)
    execution = execution or Execution.for_device(device, compile_mode)
    optimizer = build_optimizer(cfg, params, execution.fused_optimizer)
    scheduler = build_scheduler(cfg, optimizer)
    history: list[dict] = []
    start_epoch = 0

    resume_path = Path(resume_path) if resume_path else None
    if resume_path is not None and resume_path.exists():
        try:
            state = safe_load(resume_path, map_location=device)
        except CheckpointError as err:
            print(f"[{run_name}] ignoring resume checkpoint: {err}")
            state = None
        if state is not None and state.get("format") == RESUME_FORMAT and state.get("config") == cfg:
            model.load_state_dict(state["model"])
            if teacher is not None and "teacher_projection" in state:
                teacher.projection.load_state_dict(state["teacher_projection"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            if bank is not None:
                bank.load_state_dict(state["bank"])
            set_rng_state(state["rng"], generator)
            history, start_epoch = list(state["history"]), int(state["epoch"])
            print(f"[{run_name}] resuming after epoch {start_epoch}/{cfg['epochs']} from {resume_path}")
        elif state is not None:
            print(f"[{run_name}] resume checkpoint {resume_path} is for another config; starting afresh")

    nets = Networks.of(model, teacher, compile_mode)
    ctx = StepContext(cfg, nets, model, teacher, bank, step_checks=execution.step_checks)
    step_fn = STEPS[method]
    use_amp = cfg.get("amp", device.type == "cuda")  # bf16 autocast; losses and BatchNorm stay float32
    steps_per_epoch = n // batch_size
    views = 1 if method == "ce" else 2

    def save_resume(epoch: int) -> None:
        if resume_path is None or not ddp.main:
            return
        state = {"format": RESUME_FORMAT, "config": cfg, "epoch": epoch, "model": model.state_dict(),
                 "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                 "rng": rng_state(generator), "history": history}
        if teacher is not None:
            state["teacher_projection"] = teacher.projection.state_dict()
        if bank is not None:
            state["bank"] = bank.state_dict()
        atomic_write(resume_path, lambda tmp: torch.save(state, tmp))

    try:
        from tqdm.auto import tqdm
    except ImportError:  # progress bars are optional
        tqdm = None

    try:
        for epoch in range(start_epoch, cfg["epochs"]):
            model.train()
            if method == "projection":
                model.backbone.eval()
            if teacher is not None:
                teacher.backbone.eval()
            start = time.perf_counter()
            perm = torch.randperm(n, generator=generator, device=device)
            sums = {}
            correct_total = torch.zeros((), device=device, dtype=torch.long)
            seen_total = 0
            bad_step = torch.full((), -1, device=device, dtype=torch.long)
            bar = None
            if progress and tqdm is not None and ddp.main:
                bar = tqdm(total=steps_per_epoch, desc=f"{run_name} {epoch + 1}/{cfg['epochs']}", leave=False,
                           unit="step", disable=bool(os.environ.get("TQDM_DISABLE")))
            for step in range(steps_per_epoch):
                if execution.mark_cudagraph_steps:  # the previous step's graph outputs are no longer read
                    torch.compiler.cudagraph_mark_step_begin()
                idx = perm[step * batch_size:(step + 1) * batch_size]
                mine = idx[shard]
                images = train.images[mine]
                # augmentation parameters are drawn for the global batch, so every rank (and a
                # single process) consumes the generator identically; each rank applies its shard
                x = torch.cat([crop_flip(images, [p[shard] for p in crop_flip_params(batch_size, generator, device)],
                                         info) for _ in range(views)])
                if cfg.get("channels_last"):
                    x = x.contiguous(memory_format=torch.channels_last)
                batch = Batch(x, train.labels[mine], mine)
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
                    loss, parts, correct, seen = step_fn(ctx, batch)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                average_gradients(params)
                grad_norm = torch.nn.utils.get_total_norm([p.grad for p in params if p.grad is not None])
                finite = torch.isfinite(loss) & torch.isfinite(grad_norm)
                if ctx.step_checks:
                    if not bool(finite):
                        raise NonFiniteError(
                            f"[{run_name}] non-finite {'loss' if not torch.isfinite(loss) else 'gradient'} at "
                            f"epoch {epoch + 1}, step {step + 1}: "
                            + ", ".join(f"{k}={float(v.detach()):.4g}" for k, v in parts.items())
                            + f", grad_norm={float(grad_norm):.4g}; the last good checkpoint is kept")
                else:
                    bad_step = torch.where((bad_step < 0) & ~finite, step, bad_step)
                optimizer.step()
                if "bank_update" in ctx.extra:
                    bank.update(*ctx.extra.pop("bank_update"), validate=ctx.step_checks)
                for k, v in {"loss": loss, **parts}.items():
                    sums[k] = sums.get(k, 0) + v.detach().float()
                if correct is not None:
                    correct_total += correct
                    seen_total += seen
                if bar is not None and (step % 10 == 0 or step == steps_per_epoch - 1):
                    elapsed = time.perf_counter() - start
                    shown = {"img_s": f"{(step + 1) * batch_size / elapsed:.0f}"}
                    if ctx.step_checks:  # reading the loss syncs the host: only where that is free
                        shown["loss"] = f"{float(loss.detach()):.4f}"
                    bar.set_postfix(shown)
                if bar is not None:
                    bar.update(1)
            if bar is not None:
                bar.close()
            if int(bad_step) >= 0:
                raise NonFiniteError(f"[{run_name}] non-finite loss or gradient at epoch {epoch + 1}, step "
                                     f"{int(bad_step) + 1}: epoch means "
                                     + ", ".join(f"{k}={float(v) / steps_per_epoch:.4g}" for k, v in sums.items())
                                     + "; the last good checkpoint is kept")
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            seconds = time.perf_counter() - start
            if ddp.world_size > 1:  # per-rank terms (cross-entropy, accuracy) become global means
                distributed.broadcast_buffers(model)
                sums = {k: all_reduce_sum(v) / ddp.world_size for k, v in sums.items()}
                correct_total = all_reduce_sum(correct_total)
                seen_total *= ddp.world_size
            row = {"epoch": epoch + 1, **{k: float(v) / steps_per_epoch for k, v in sums.items()},
                   "lr": optimizer.param_groups[0]["lr"], "epoch_seconds": seconds,
                   "images_per_second": steps_per_epoch * batch_size / seconds}
            if seen_total:
                row["train_acc"] = float(correct_total) / seen_total * 100
            scheduler.step()
            history.append(row)
            for name, p in model.named_parameters():
                if not bool(torch.isfinite(p).all()):
                    raise NonFiniteError(f"[{run_name}] parameter {name} became non-finite in epoch {epoch + 1}")
            save_resume(epoch + 1)
            if ddp.world_size > 1:
                distributed.barrier()
            if on_epoch is not None and ddp.main:
                on_epoch(row)
    except KeyboardInterrupt:
        done = len(history)
        where = f"epoch {done} is saved in {resume_path}" if resume_path and done else "nothing was saved yet"
        raise TrainingInterrupted(f"[{run_name}] interrupted; {where}. Rerun the same command to resume.") from None
    return history
