"""Data-parallel training through torchrun: the process group, and collectives for the loop.

Every rank holds the whole split on its device and the same seeded generator, so all ranks draw
the same permutation and augmentation parameters for the global batch; each rank augments and
forwards its own shard. Embeddings are gathered with `gather_with_grad`, so every rank computes
the contrastive loss over the keys of all ranks, and the gradients that reach each rank's shard
are those of the global loss. Gradients are then averaged across ranks with one all-reduce per
step, as DistributedDataParallel does.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def current() -> Dist:
    if dist.is_available() and dist.is_initialized():
        return Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))
    return Dist()


def init_from_env(device: str) -> Dist:
    """Join the process group torchrun describes in the environment (NCCL on CUDA, Gloo on CPU);
    a plain `python` launch is a world of one."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        return current()
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if use_cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    dist.init_process_group("nccl" if use_cuda else "gloo")
    return current()


def barrier() -> None:
    if current().world_size > 1:
        dist.barrier()


def broadcast(obj):
    """Rank 0's value of a picklable object, on every rank."""
    if current().world_size == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


class _GatherWithGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        world = dist.get_world_size()
        parts = [torch.empty_like(x) for _ in range(world)]
        dist.all_gather(parts, x.contiguous())
        ctx.rank, ctx.rows = dist.get_rank(), x.shape[0]
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad):
        # every rank computed the same global loss from the gathered rows: sum their gradients
        grad = grad.contiguous()
        dist.all_reduce(grad)
        return grad[ctx.rank * ctx.rows:(ctx.rank + 1) * ctx.rows]


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate every rank's rows (rank order); gradients flow back to each rank's own rows."""
    return x if current().world_size == 1 else _GatherWithGrad.apply(x)


@torch.no_grad()
def gather(x: torch.Tensor) -> torch.Tensor:
    if current().world_size == 1:
        return x
    parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts)


@torch.no_grad()
def average_gradients(params: list[torch.nn.Parameter]) -> None:
    """Mean of each gradient over ranks, in one flat all-reduce."""
    world = current().world_size
    if world == 1:
        return
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= world
    offset = 0
    for g in grads:
        g.copy_(flat[offset:offset + g.numel()].view_as(g))
        offset += g.numel()


@torch.no_grad()
def all_reduce_sum(x: torch.Tensor) -> torch.Tensor:
    if current().world_size > 1:
        x = x.clone()
        dist.all_reduce(x)
    return x


@torch.no_grad()
def broadcast_buffers(module: torch.nn.Module) -> None:
    """Rank 0's BatchNorm statistics on every rank (what DDP's broadcast_buffers gives: each rank's
    statistics follow rank 0's shards)."""
    if current().world_size > 1:
        for buf in module.buffers():
            dist.broadcast(buf, src=0)
