"""The training loop shared by every run: teacher cross-entropy, the teacher's projection head,
and the students (undistilled, SupCon, CRD, LW-SupCRD, with or without a memory bank).

The split stays on the device as uint8; each step draws a batch from a seeded permutation and
augments it there. Each method's step (`steps.py`) returns a `StepResult`, whose `parts` name the
loss terms; those names are the columns of the training log. After every epoch the complete
training state goes to a resume checkpoint, so rerunning after a kill continues bit for bit.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn

from . import distributed
from .checkpoint import CheckpointError, open_sealed, rng_state, seal, set_rng_state
from .files import save_torch, set_aside
from .data import DatasetInfo, Split, color_jitter_params, crop_flip, crop_flip_params
from .distributed import all_reduce_sum, average_gradients, current
from .memory_bank import MomentumMemoryBank
from .models import ModelWrapper
from .methods import build_extras, method_of, needs_teacher, step_of
from .optimizers import build_optimizer, build_scheduler, side_groups, trainable_parameters
from .signals import Terminated
from .steps import Batch, Networks, StepContext, StepResult, teacher_bank_keys, weight_summary

RESUME_FORMAT = "lwsupcrd-resume-v1"


class NonFiniteError(RuntimeError):
    """A loss or gradient became NaN or infinite; training stopped before saving anything from it."""


class TrainingInterrupted(RuntimeError):
    """Ctrl-C or SIGTERM during training; the resume checkpoint of the last finished epoch is on disk."""


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
    extras: nn.Module | None = None
    history: list[dict] = field(default_factory=list)
    side_optimizers: list[torch.optim.Optimizer] = field(default_factory=list)  # see `side_groups`

    @property
    def optimizers(self) -> list[torch.optim.Optimizer]:
        return [self.optimizer, *self.side_optimizers]

    def state(self, epoch: int) -> dict:
        state = {"format": RESUME_FORMAT, "config": self.cfg, "epoch": epoch, "model": self.model.state_dict(),
                 "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                 "rng": rng_state(self.generator), "history": self.history}
        if self.side_optimizers:
            state["side_optimizers"] = [o.state_dict() for o in self.side_optimizers]
        if self.teacher is not None:
            state["teacher_projection"] = self.teacher.projection.state_dict()
        if self.bank is not None:
            state["bank"] = self.bank.state_dict()
        if self.extras is not None:
            state["extras"] = self.extras.state_dict()
        return state

    def restore(self, path: Path, device: torch.device) -> int:
        """Continue from a resume checkpoint written with the same config; returns the epochs done.
        The file is read onto the CPU whatever `device` the run trains on: RNG states must stay CPU
        byte tensors, and each load_state_dict moves its tensors to where the module lives."""
        try:  # on the CPU: RNG states must stay CPU byte tensors; load_state_dict moves the rest to the device
            state = open_sealed(path)
        except CheckpointError as err:  # damaged, tampered with or non-finite: never trusted, never deleted
            kept = set_aside(path)
            print(f"[{self.name}] resume state not used: {err}; kept as {kept.name}; training from epoch 0")
            return 0
        if state.get("format") != RESUME_FORMAT or state.get("config") != self.cfg:
            print(f"[{self.name}] resume checkpoint {path} is for another config; starting afresh")
            return 0
        self.model.load_state_dict(state["model"])
        if self.teacher is not None and "teacher_projection" in state:
            self.teacher.projection.load_state_dict(state["teacher_projection"])
        self.optimizer.load_state_dict(state["optimizer"])
        for optimizer, saved in zip(self.side_optimizers, state.get("side_optimizers", [])):
            optimizer.load_state_dict(saved)
        self.scheduler.load_state_dict(state["scheduler"])
        if self.bank is not None:
            self.bank.load_state_dict(state["bank"])
        if self.extras is not None:
            self.extras.load_state_dict(state["extras"])
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
    strength = loop.cfg.get("color_jitter", 0.0)
    x = []
    for _ in range(views):
        crop = [p[shard] for p in crop_flip_params(len(idx), loop.generator, idx.device)]
        jitter = [p[shard] for p in color_jitter_params(len(idx), strength, loop.generator, idx.device)] \
            if strength else None
        x.append(crop_flip(images, crop, info, jitter=jitter))
    x = torch.cat(x)
    if loop.cfg.get("channels_last"):
        x = x.contiguous(memory_format=torch.channels_last)
    return Batch(x, train.labels[mine], mine)


def _train_epoch(loop: Loop, epoch: int, train: Split, info: DatasetInfo, device: torch.device, step_fn: Callable,
                 ctx: StepContext, progress: bool) -> dict:
    """One pass over the split; returns the epoch's log row (loss parts, accuracy, weights, speed)."""
    cfg, ex = loop.cfg, loop.execution
    loop.model.train()
    if loop.extras is not None:
        loop.extras.train()
    if cfg["method"] == "projection" and not cfg.get("teacher_bn_drift"):
        loop.model.backbone.eval()
    if loop.teacher is not None:
        loop.teacher.backbone.eval()
    n, batch_size = len(train), cfg["batch_size"]
    steps = n // batch_size
    views = cfg.get("views") or method_of(cfg).views
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
        for optimizer in loop.optimizers:
            optimizer.zero_grad(set_to_none=True)
        result.loss.backward()
        average_gradients(loop.params)
        grad_norm = torch.nn.utils.get_total_norm([p.grad for p in loop.params if p.grad is not None])
        if ex.step_checks:
            _check_step(loop, epoch, step, result, grad_norm)
        else:
            finite = torch.isfinite(result.loss) & torch.isfinite(grad_norm)
            bad_step = torch.where((bad_step < 0) & ~finite, step, bad_step)
        for optimizer in loop.optimizers:
            optimizer.step()
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
    return _epoch_row(loop, epoch, sums, correct, seen, weights, steps, seconds)


def _epoch_row(loop: Loop, epoch: int, sums: dict, correct: torch.Tensor, seen: int, weights: dict, steps: int,
               seconds: float) -> dict:
    """The epoch's log row: mean loss parts, learning rate, speed, train accuracy, weight statistics."""
    ddp = current()
    if ddp.world_size > 1:  # per-rank terms (cross-entropy, accuracy) become global means
        distributed.broadcast_buffers(loop.model)
        sums = {k: all_reduce_sum(v) / ddp.world_size for k, v in sums.items()}
        correct = all_reduce_sum(correct)
        seen *= ddp.world_size
    row = {"epoch": epoch + 1, **{k: float(v) / steps for k, v in sums.items()},
           "lr": loop.optimizer.param_groups[0]["lr"], "epoch_seconds": seconds,
           "images_per_second": steps * loop.cfg["batch_size"] / seconds}
    if seen:
        row["train_acc"] = float(correct) / seen * 100
    row.update(weight_summary(weights))
    return row


def epoch_line(row: dict, epochs: int) -> str:
    """The line printed after each epoch: its loss parts, accuracy and, for LW-SupCRD, its weights."""
    shown = ", ".join(f"{k} {v:.4f}" for k, v in row.items()
                      if k not in ("epoch", "lr", "epoch_seconds") and not k.startswith("w."))
    if "w.q_mean" in row:
        shown += (f", teacher q {row['w.q_mean']:.3f} [{row['w.q_p05']:.3f}, {row['w.q_p95']:.3f}], "
                  f"margin {row['w.margin_mean']:.2f}")
    return f"   epoch {row['epoch']}/{epochs}: {shown} ({row['epoch_seconds']:.1f}s)"


def fit(run_name: str, cfg: dict, model: ModelWrapper, train: Split, info: DatasetInfo, device: torch.device,
        teacher: ModelWrapper | None = None, resume_path: str | Path | None = None,
        on_epoch: Callable[[dict], None] | None = None, progress: bool = True,
        bank: MomentumMemoryBank | None = None, compile_mode: str | None = None,
        execution: Execution | None = None, extras: nn.Module | None = None,
        score_epoch: Callable[[int], dict | None] | None = None) -> list[dict]:
    """Train `model` (and, for distillation, the teacher's projection head) for cfg["epochs"].

    `train` must already be on `device`. Returns one row per epoch. Writes `resume_path` after each
    epoch (rank 0 under torchrun) and resumes from it when it exists and was written with the same
    `cfg`. With `bank_negatives` in cfg a memory bank is made, unless the caller passes `bank`; a
    standard method's extra modules and state (`methods.build_extras`), unless it passes `extras`.
    `score_epoch(epoch)`, if given, is asked after each epoch (counted from 1) and may score the model
    (e.g. its test accuracy; None: not this epoch); its values join the epoch's row before the resume
    state is written, so a resumed run keeps them.
    Under torchrun, cfg["batch_size"] is the global batch, split evenly across the ranks.
    `compile_mode` runs the networks through torch.compile (see COMPILE_MODES); it is how the
    run executes, not what it computes, so it is not part of `cfg`; so is `execution` (default:
    `Execution.for_device(device, compile_mode)`).
    """
    ddp = current()
    step = step_of(cfg)  # one clear error for a method the registry lacks
    if needs_teacher(cfg) and teacher is None:
        raise ValueError(f"method {cfg['method']} needs a teacher")
    n, batch_size = len(train), cfg["batch_size"]
    if not 2 <= batch_size <= n:
        raise ValueError(f"batch_size must lie in [2, {n}] (the training set size), got {batch_size}")
    if batch_size % ddp.world_size:
        raise ValueError(f"batch_size {batch_size} must divide evenly over {ddp.world_size} processes")

    generator = torch.Generator(device=device)
    generator.manual_seed(cfg["seed"])
    if cfg.get("bank_negatives") and bank is None:
        bank = MomentumMemoryBank(n, teacher.projection[-1].out_features, train.labels,
                                  momentum=cfg["bank_momentum"], seed=cfg["seed"], device=device,
                                  num_classes=cfg["num_classes"] if cfg.get("bank_form") == "port" else None)
        if cfg.get("bank_init", "random") == "teacher":  # a resumed run overwrites this with its saved bank
            bank.fill(teacher_bank_keys(teacher, train, info, bool(cfg.get("channels_last"))))
    execution = execution or Execution.for_device(device, compile_mode)
    extras = extras if extras is not None else build_extras(cfg, model, teacher, train)
    params = trainable_parameters(cfg, model, teacher, extras)
    optimizer = build_optimizer(cfg, params, execution.fused_optimizer)
    side = [torch.optim.Adam(p, lr=lr, fused=execution.fused_optimizer or None)
            for p, lr in side_groups(cfg, model, teacher)]
    loop = Loop(run_name, cfg, model, teacher, bank, params + [p for o in side for g in o.param_groups
                                                                 for p in g["params"]],
                optimizer, build_scheduler(cfg, optimizer), generator, execution, extras, side_optimizers=side)
    resume_path = Path(resume_path) if resume_path else None
    start_epoch = loop.restore(resume_path, device) if resume_path is not None and resume_path.exists() else 0
    ctx = StepContext(cfg, Networks.of(model, teacher, compile_mode), model, teacher, bank, extras)
    try:
        for epoch in range(start_epoch, cfg["epochs"]):
            ctx.epoch = epoch
            row = _train_epoch(loop, epoch, train, info, device, step, ctx, progress)
            if score_epoch is not None:
                row.update(score_epoch(epoch + 1) or {})
            loop.scheduler.step()
            loop.history.append(row)
            for name, p in model.named_parameters():
                if not bool(torch.isfinite(p).all()):
                    raise NonFiniteError(f"[{run_name}] parameter {name} became non-finite in epoch {epoch + 1}")
            if resume_path is not None and ddp.main:
                save_torch(resume_path, seal(loop.state(epoch + 1)))
            distributed.barrier()
            if on_epoch is not None and ddp.main:
                on_epoch(row)
    except KeyboardInterrupt as err:
        done = len(loop.history)
        where = f"epoch {done} is saved in {resume_path}" if resume_path and done else "nothing was saved yet"
        how = "stopped by SIGTERM" if isinstance(err, Terminated) else "interrupted"
        raise TrainingInterrupted(f"[{run_name}] {how}; {where}. Rerun the same command to resume.") from None
    return loop.history
