"""The training loop shared by every run: teacher cross-entropy, the teacher's projection head,
and the students (undistilled, SupCon, CRD, LW-SupCRD, with or without a memory bank).

The split stays on the device as uint8; each step draws a batch from a seeded permutation and
augments it there. Each method's step returns a `StepResult`, whose `parts` name the loss terms;
those names are the columns of the training log. After every epoch the complete
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
from .data import DatasetInfo, Split, crop_flip, crop_flip_params, normalize
from . import distributed
from .distributed import all_reduce_sum, average_gradients, current, gather, gather_with_grad
from .losses import crd_loss, lw_supcrd_loss, lw_weights, supcon_loss
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


@dataclass
class StepResult:
    """What one training step produced: the loss to back-propagate, its named parts (the columns of
    the training log), accuracy counts, what the memory bank should store, and weight samples."""

    loss: torch.Tensor
    parts: dict[str, torch.Tensor]
    correct: torch.Tensor | None = None
    seen: int = 0
    bank_update: tuple[torch.Tensor, torch.Tensor] | None = None  # (slots, keys) of the global batch
    weights: dict[str, torch.Tensor] = field(default_factory=dict)  # LW-SupCRD weight samples (see WEIGHT_STATS)


def step_ce(ctx, batch):
    logits = ctx.nets.logits(batch.x)
    loss = F.cross_entropy(logits.float(), batch.labels)
    return StepResult(loss, {"ce": loss}, (logits.argmax(1) == batch.labels).sum(), len(batch.labels))


def step_undistilled(ctx, batch):
    labels = batch.labels.repeat(2)
    logits = ctx.nets.logits(batch.x)
    loss = F.cross_entropy(logits.float(), labels)
    return StepResult(loss, {"ce": loss}, (logits.argmax(1) == labels).sum(), len(labels))


def step_projection(ctx, batch):
    with torch.inference_mode():
        features = ctx.nets.features(batch.x)
    z = gather_with_grad(ctx.model.project(features.clone()))
    loss = supcon_loss(z, gather(batch.labels.repeat(2)), ctx.cfg["temperature"], validate=False)
    return StepResult(loss, {"supcon": loss})


def step_supcon(ctx, batch):
    _, z, _ = ctx.nets.forward(batch.x)
    loss = supcon_loss(gather_with_grad(z), gather(batch.labels.repeat(2)), ctx.cfg["temperature"], validate=False)
    return StepResult(loss, {"supcon": loss})


def _teacher_keys(ctx, x):
    with torch.inference_mode():
        features = ctx.nets.teacher_features(x)
        probs = torch.softmax(ctx.teacher.classifier(features).float(), dim=1)
    t = ctx.teacher.project(features.clone())  # the teacher's head keeps training
    return t, probs.clone()


# sampled per step: at most this many anchors, and this many keys per anchor, evenly spaced
WEIGHT_SAMPLE = 64


@torch.no_grad()
def weight_samples(cfg: dict, probs: torch.Tensor, labels: torch.Tensor, key_labels: torch.Tensor) -> dict:
    """LW-SupCRD's weights this step, for the per-epoch diagnostics: q_i, beta_i, w_pull_i for an
    evenly spaced sample of anchors, and w_push and the margin log(w_push / w_pull) over a grid of
    anchor-key pairs (NaN where the key is not a negative). No host synchronisation."""
    rows = torch.arange(0, len(labels), max(1, len(labels) // WEIGHT_SAMPLE), device=labels.device)
    cols = torch.arange(0, len(key_labels), max(1, len(key_labels) // WEIGHT_SAMPLE), device=labels.device)
    q, w_pull, beta_i, log_push = lw_weights(probs[rows], labels[rows], key_labels[cols], cfg["alpha"], cfg["beta"],
                                             cfg["adaptive_beta"], cfg.get("logit_weighting", True))
    negative = labels[rows][:, None] != key_labels[cols][None, :]
    nan = torch.full_like(log_push, float("nan"))
    return {"q": q, "beta_i": beta_i, "w_pull": w_pull,
            "w_push": torch.where(negative, log_push.exp(), nan).flatten(),
            "margin": torch.where(negative, log_push - torch.log(w_pull)[:, None], nan).flatten(),
            "teacher_wrong": (probs[rows].argmax(1) != labels[rows]).float()}


def weight_summary(samples: dict[str, list[torch.Tensor]]) -> dict[str, float]:
    """Mean, 5th and 95th percentile of each weight over an epoch's samples (the teacher's error: its mean)."""
    out = {}
    for key, parts in samples.items():
        x = torch.cat(parts).float()
        x = x[~torch.isnan(x)]
        if not len(x):
            continue
        if key == "teacher_wrong":
            out["w.teacher_wrong"] = float(x.mean())
            continue
        lo, hi = torch.quantile(x, torch.tensor([0.05, 0.95], device=x.device)).tolist()
        out.update({f"w.{key}_mean": float(x.mean()), f"w.{key}_p05": lo, f"w.{key}_p95": hi})
    return out


def _distill(ctx, batch, loss_name):
    cfg = ctx.cfg
    _, z_local, _ = ctx.nets.forward(batch.x)
    t_local, probs = _teacher_keys(ctx, batch.x)
    z, t = gather_with_grad(z_local), gather_with_grad(t_local)  # every rank's anchors and keys
    labels, slots, probs = gather(batch.labels.repeat(2)), gather(batch.slots.repeat(2)), gather(probs)
    bank_keys = bank_labels = bank_ids = None
    if ctx.bank is not None:
        bank_keys, bank_labels, bank_ids = ctx.bank.sample(cfg["bank_negatives"])
    weights = {}
    if loss_name == "crd":
        loss = crd_loss(z, t, slots, cfg["temperature"], bank_keys, bank_ids, validate=False)
    else:
        loss = lw_supcrd_loss(z, t, labels, probs, cfg["alpha"], cfg["beta"], cfg["temperature"],
                              cfg["adaptive_beta"], bank_keys, bank_labels, validate=False,
                              alpha_mode=cfg.get("alpha_mode", "weight"),
                              logit_weighting=cfg.get("logit_weighting", True))
        key_labels = labels if bank_labels is None else torch.cat([labels, bank_labels])
        weights = weight_samples(cfg, probs, labels, key_labels)
    update = None
    if ctx.bank is not None:  # the mean of the two views' keys, for every image of the global batch
        b = len(batch.slots)
        update = (gather(batch.slots), gather(((t_local[:b] + t_local[b:]) / 2).detach()))
    return StepResult(loss, {loss_name: loss}, bank_update=update, weights=weights)


STEPS: dict[str, Callable] = {
    "ce": step_ce,
    "undistilled": step_undistilled,
    "projection": step_projection,
    "supcon": step_supcon,
    "crd": lambda ctx, batch: _distill(ctx, batch, "crd"),
    "lwsupcrd": lambda ctx, batch: _distill(ctx, batch, "lw_supcrd"),
}


@torch.no_grad()
def teacher_bank_keys(teacher: ModelWrapper, train: Split, info: DatasetInfo, channels_last: bool = False,
                      batch_size: int = 1024) -> torch.Tensor:
    """The teacher's keys of every un-augmented training image (eval mode), in slot order."""
    was_training = teacher.training
    teacher.eval()
    keys = []
    for start in range(0, len(train), batch_size):
        x = normalize(train.images[start:start + batch_size], info)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        keys.append(teacher.project(teacher.backbone.forward_features(x)).float())
    teacher.train(was_training)
    return torch.cat(keys)


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


@dataclass
class Loop:
    """Everything one training run carries from step to step (and into its resume checkpoint)."""

    name: str
    cfg: dict
    model: ModelWrapper
    teacher: ModelWrapper | None
    bank: MomentumMemoryBank | None
    params: list[nn.Parameter]
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    generator: torch.Generator
    execution: Execution
    history: list[dict] = field(default_factory=list)

    def state(self, epoch: int) -> dict:
        state = {"format": RESUME_FORMAT, "config": self.cfg, "epoch": epoch, "model": self.model.state_dict(),
                 "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                 "rng": rng_state(self.generator), "history": self.history}
        if self.teacher is not None:
            state["teacher_projection"] = self.teacher.projection.state_dict()
        if self.bank is not None:
            state["bank"] = self.bank.state_dict()
        return state

    def restore(self, path: Path, device: torch.device) -> int:
        """Continue from a resume checkpoint written with the same config; returns the epochs done."""
        try:
            state = safe_load(path, map_location=device)
        except CheckpointError as err:
            print(f"[{self.name}] ignoring resume checkpoint: {err}")
            return 0
        if state.get("format") != RESUME_FORMAT or state.get("config") != self.cfg:
            print(f"[{self.name}] resume checkpoint {path} is for another config; starting afresh")
            return 0
        self.model.load_state_dict(state["model"])
        if self.teacher is not None and "teacher_projection" in state:
            self.teacher.projection.load_state_dict(state["teacher_projection"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.bank is not None:
            self.bank.load_state_dict(state["bank"])
        set_rng_state(state["rng"], self.generator)
        self.history = list(state["history"])
        print(f"[{self.name}] resuming after epoch {state['epoch']}/{self.cfg['epochs']} from {path}")
        return int(state["epoch"])


def _check_step(loop: Loop, epoch: int, step: int, result: StepResult, grad_norm: torch.Tensor) -> None:
    loss = result.loss
    if not bool(torch.isfinite(loss) & torch.isfinite(grad_norm)):
        raise NonFiniteError(
            f"[{loop.name}] non-finite {'loss' if not torch.isfinite(loss) else 'gradient'} at "
            f"epoch {epoch + 1}, step {step + 1}: "
            + ", ".join(f"{k}={float(v.detach()):.4g}" for k, v in result.parts.items())
            + f", grad_norm={float(grad_norm):.4g}; the last good checkpoint is kept")


def _progress_bar(loop: Loop, epoch: int, steps: int, progress: bool):
    if not progress or not current().main:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:  # progress bars are optional
        return None
    return tqdm(total=steps, desc=f"{loop.name} {epoch + 1}/{loop.cfg['epochs']}", leave=False, unit="step",
                disable=bool(os.environ.get("TQDM_DISABLE")))


def _next_batch(loop: Loop, train: Split, info: DatasetInfo, idx: torch.Tensor, views: int) -> Batch:
    """This rank's shard of the global batch `idx`, augmented. The augmentation parameters are
    drawn for the global batch, so every rank (and a single process) consumes the generator alike."""
    ddp = current()
    local = len(idx) // ddp.world_size
    shard = slice(ddp.rank * local, (ddp.rank + 1) * local)
    mine = idx[shard]
    images = train.images[mine]
    x = torch.cat([crop_flip(images, [p[shard] for p in crop_flip_params(len(idx), loop.generator, idx.device)],
                             info) for _ in range(views)])
    if loop.cfg.get("channels_last"):
        x = x.contiguous(memory_format=torch.channels_last)
    return Batch(x, train.labels[mine], mine)


def _train_epoch(loop: Loop, epoch: int, train: Split, info: DatasetInfo, device: torch.device, step_fn: Callable,
                 ctx: StepContext, progress: bool) -> dict:
    """One pass over the split; returns the epoch's log row (loss parts, accuracy, weights, speed)."""
    cfg, ex = loop.cfg, loop.execution
    loop.model.train()
    if cfg["method"] == "projection":
        loop.model.backbone.eval()
    if loop.teacher is not None:
        loop.teacher.backbone.eval()
    n, batch_size = len(train), cfg["batch_size"]
    steps = n // batch_size
    views = 1 if cfg["method"] == "ce" else 2
    use_amp = cfg.get("amp", device.type == "cuda")  # bf16 autocast; losses and BatchNorm stay float32
    start = time.perf_counter()
    perm = torch.randperm(n, generator=loop.generator, device=device)
    sums: dict[str, torch.Tensor] = {}
    weights: dict[str, list[torch.Tensor]] = {}
    correct = torch.zeros((), device=device, dtype=torch.long)
    seen = 0
    bad_step = torch.full((), -1, device=device, dtype=torch.long)
    bar = _progress_bar(loop, epoch, steps, progress)
    for step in range(steps):
        if ex.mark_cudagraph_steps:  # the previous step's graph outputs are no longer read
            torch.compiler.cudagraph_mark_step_begin()
        batch = _next_batch(loop, train, info, perm[step * batch_size:(step + 1) * batch_size], views)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
            result = step_fn(ctx, batch)
        loop.optimizer.zero_grad(set_to_none=True)
        result.loss.backward()
        average_gradients(loop.params)
        grad_norm = torch.nn.utils.get_total_norm([p.grad for p in loop.params if p.grad is not None])
        if ex.step_checks:
            _check_step(loop, epoch, step, result, grad_norm)
        else:
            finite = torch.isfinite(result.loss) & torch.isfinite(grad_norm)
            bad_step = torch.where((bad_step < 0) & ~finite, step, bad_step)
        loop.optimizer.step()
        if result.bank_update is not None:
            loop.bank.update(*result.bank_update, validate=ex.step_checks)
        for k, v in {"loss": result.loss, **result.parts}.items():
            sums[k] = sums.get(k, 0) + v.detach().float()
        for k, v in result.weights.items():
            weights.setdefault(k, []).append(v)
        if result.correct is not None:
            correct += result.correct
            seen += result.seen
        if bar is not None:
            bar.update(1)
            if ex.step_checks and (step % 10 == 0 or step == steps - 1):  # reading the loss syncs the host
                bar.set_postfix(loss=f"{float(result.loss.detach()):.4f}")
    if bar is not None:
        bar.close()
    if int(bad_step) >= 0:
        raise NonFiniteError(f"[{loop.name}] non-finite loss or gradient at epoch {epoch + 1}, step "
                             f"{int(bad_step) + 1}: epoch means "
                             + ", ".join(f"{k}={float(v) / steps:.4g}" for k, v in sums.items())
                             + "; the last good checkpoint is kept")
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    ddp = current()
    if ddp.world_size > 1:  # per-rank terms (cross-entropy, accuracy) become global means
        distributed.broadcast_buffers(loop.model)
        sums = {k: all_reduce_sum(v) / ddp.world_size for k, v in sums.items()}
        correct = all_reduce_sum(correct)
        seen *= ddp.world_size
    row = {"epoch": epoch + 1, **{k: float(v) / steps for k, v in sums.items()},
           "lr": loop.optimizer.param_groups[0]["lr"], "epoch_seconds": seconds,
           "images_per_second": steps * batch_size / seconds}
    if seen:
        row["train_acc"] = float(correct) / seen * 100
    row.update(weight_summary(weights))
    return row


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

    generator = torch.Generator(device=device)
    generator.manual_seed(cfg["seed"])
    if cfg.get("bank_negatives") and bank is None:
        bank = MomentumMemoryBank(n, teacher.projection[-1].out_features, train.labels,
                                  momentum=cfg["bank_momentum"], seed=cfg["seed"], device=device)
        if cfg.get("bank_init", "random") == "teacher":  # a resumed run overwrites this with its saved bank
            bank.fill(teacher_bank_keys(teacher, train, info, bool(cfg.get("channels_last"))))
    execution = execution or Execution.for_device(device, compile_mode)
    params = trainable_parameters(method, model, teacher)
    optimizer = build_optimizer(cfg, params, execution.fused_optimizer)
    loop = Loop(run_name, cfg, model, teacher, bank, params, optimizer, build_scheduler(cfg, optimizer), generator,
                execution)
    resume_path = Path(resume_path) if resume_path else None
    start_epoch = loop.restore(resume_path, device) if resume_path is not None and resume_path.exists() else 0
    ctx = StepContext(cfg, Networks.of(model, teacher, compile_mode), model, teacher, bank)
    try:
        for epoch in range(start_epoch, cfg["epochs"]):
            row = _train_epoch(loop, epoch, train, info, device, STEPS[method], ctx, progress)
            loop.scheduler.step()
            loop.history.append(row)
            for name, p in model.named_parameters():
                if not bool(torch.isfinite(p).all()):
                    raise NonFiniteError(f"[{run_name}] parameter {name} became non-finite in epoch {epoch + 1}")
            if resume_path is not None and ddp.main:
                state = loop.state(epoch + 1)
                atomic_write(resume_path, lambda tmp: torch.save(state, tmp))
            distributed.barrier()
            if on_epoch is not None and ddp.main:
                on_epoch(row)
    except KeyboardInterrupt:
        done = len(loop.history)
        where = f"epoch {done} is saved in {resume_path}" if resume_path and done else "nothing was saved yet"
        raise TrainingInterrupted(f"[{run_name}] interrupted; {where}. Rerun the same command to resume.") from None
    return loop.history
