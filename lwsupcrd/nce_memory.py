"""CRD's two memories (Tian et al., ICLR 2020; RepDistiller's `ContrastMemory`): one slot per
training image for the student's embeddings and one for the teacher's, negatives drawn per anchor
from images of other classes, and the NCE normalising constants Z fixed on the first batch."""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .distill_losses import nce_loss, nce_normaliser, nce_scores


class ContrastMemories(nn.Module):
    """`student[i]` and `teacher[i]`: the momentum average (m = `momentum`, renormalised) of image
    i's embeddings, each slot starting uniform in [-1/sqrt(D/3), 1/sqrt(D/3)] as in the reference.

    `sample` draws, on the device, k negatives per anchor uniformly from the images of the other
    classes (distinct, unless a class's pool is smaller than k), from the memories' own seeded
    generator; its state is in `state_dict()`, with Z, so a resumed run samples the same negatives.
    """

    def __init__(self, labels: torch.Tensor, dim: int, k: int, temperature: float = 0.07, momentum: float = 0.5,
                 seed: int = 0, device: torch.device | str | None = None):
        super().__init__()
        labels = torch.as_tensor(labels)
        device = torch.device(device) if device is not None else labels.device
        n = labels.shape[0]
        if labels.dim() != 1 or n < 2 or dim < 1 or k < 1:
            raise ValueError(f"need 1-D labels of >= 2 images, dim >= 1 and k >= 1; got {tuple(labels.shape)}, {dim}, {k}")
        if not 0 <= momentum < 1 or not temperature > 0:
            raise ValueError(f"momentum must lie in [0, 1) and temperature be > 0, got {momentum}, {temperature}")
        self.k, self.temperature, self.momentum = k, temperature, momentum
        self.generator = torch.Generator(device=device)
        self.generator.manual_seed(seed)
        bound = 1.0 / math.sqrt(dim / 3)
        for name in ("student", "teacher"):
            init = torch.rand(n, dim, generator=self.generator, device=device) * 2 * bound - bound
            self.register_buffer(name, init)  # (N, D)
        labels = labels.to(device=device, dtype=torch.long)
        order = torch.argsort(labels, stable=True)  # slots grouped by class
        counts = torch.bincount(labels)
        self.register_buffer("labels", labels)
        self.register_buffer("by_class", order, persistent=False)
        self.register_buffer("class_start", torch.cumsum(counts, 0) - counts, persistent=False)
        self.register_buffer("class_count", counts, persistent=False)
        self.register_buffer("z", torch.full((2,), -1.0, dtype=torch.float64, device=device))  # student, teacher
        self._z_fixed = False

    @property
    def size(self) -> int:
        return self.student.shape[0]

    @torch.no_grad()
    def sample(self, labels: torch.Tensor, slots: torch.Tensor) -> torch.Tensor:
        """(B, k + 1) slots: each anchor's own slot (its positive), then k images of other classes."""
        start, count = self.class_start[labels][:, None], self.class_count[labels][:, None]  # (B, 1)
        pool = self.size - int(self.class_count.max())
        if self.k <= pool:  # distinct: the k largest of uniform scores, own class excluded
            position = torch.arange(self.size, device=labels.device)[None, :]
            own = (position >= start) & (position < start + count)
            scores = torch.rand(len(labels), self.size, generator=self.generator, device=labels.device)
            picked = scores.masked_fill(own, -1.0).topk(self.k, dim=1).indices  # (B, k) positions
        else:  # a pool smaller than k: with replacement, as the reference does
            u = torch.rand(len(labels), self.k, generator=self.generator, device=labels.device)
            offset = (u * (self.size - count)).long()
            picked = torch.where(offset < start, offset, offset + count)
        return torch.cat([slots[:, None], self.by_class[picked]], dim=1)

    def loss(self, v_student: torch.Tensor, v_teacher: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        """Both directions of CRD's NCE objective (`distill_losses.nce_loss`): the student's embedding
        against the teacher memory's slots `indices` (B, k + 1), plus the teacher's against the
        student memory's; Z of each direction is set on the first call and then fixed. The slots in
        column 0 are then momentum-updated with the batch's embeddings."""
        s_scores = nce_scores(v_student, self.teacher[indices].detach(), self.temperature)
        t_scores = nce_scores(v_teacher, self.student[indices].detach(), self.temperature)
        if not self._z_fixed and float(self.z[0]) < 0:  # the first batch (one host sync, once per process)
            self.z.copy_(torch.tensor([nce_normaliser(s_scores, self.size), nce_normaliser(t_scores, self.size)],
                                      dtype=torch.float64))
        self._z_fixed = True
        z = self.z.to(s_scores.dtype)
        loss = nce_loss(s_scores, z[0], self.size) + nce_loss(t_scores, z[1], self.size)
        self.update(indices[:, 0], v_student, v_teacher)
        return loss

    @torch.no_grad()
    def update(self, slots: torch.Tensor, v_student: torch.Tensor, v_teacher: torch.Tensor) -> None:
        for memory, v in ((self.student, v_student), (self.teacher, v_teacher)):
            new = self.momentum * memory[slots] + (1 - self.momentum) * v.detach().to(memory.dtype)
            memory.index_copy_(0, slots, F.normalize(new, dim=1))

    def state_dict(self, *args, **kwargs):
        state = super().state_dict(*args, **kwargs)
        state[kwargs.get("prefix", "") + "generator_state"] = self.generator.get_state()
        return state

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        state = dict(state_dict)
        generator_state = state.pop("generator_state", None)
        if strict and generator_state is None:
            raise ValueError("contrast memories' state has no generator_state")
        result = super().load_state_dict(state, strict=strict, assign=assign)
        if generator_state is not None:
            self.generator.set_state(generator_state.cpu())
        self._z_fixed = False  # read again from the loaded z
        return result
