"""Momentum memory bank of teacher keys: one slot per training image (Wu et al. 2018; CRD)."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class MomentumMemoryBank(nn.Module):
    """`bank[i] <- normalize(m * bank[i] + (1 - m) * key)` for the images of each step, and a
    uniform sample of k distinct slots as extra negatives.

    Slots start as random unit vectors drawn from the bank's own seeded generator, which also
    draws the samples; its state is part of `state_dict()`, so a resumed run samples the same
    negatives. With `num_classes`, each slot also keeps a moving average of its image's teacher
    logits (zeros at first), as the original's later port does (`update_last_view`).
    """

    def __init__(self, size: int, dim: int, labels: torch.Tensor, momentum: float = 0.5, seed: int = 0,
                 device: torch.device | str | None = None, num_classes: int | None = None):
        super().__init__()
        if size < 1 or dim < 1:
            raise ValueError(f"bank size and dim must be >= 1, got size={size}, dim={dim}")
        if not 0 <= momentum < 1:
            raise ValueError(f"momentum must lie in [0, 1), got {momentum}")
        labels = torch.as_tensor(labels)
        if labels.shape != (size,):
            raise ValueError(f"labels must have shape ({size},), got {tuple(labels.shape)}")
        device = torch.device(device) if device is not None else labels.device
        self.momentum = momentum
        self.generator = torch.Generator(device=device)
        self.generator.manual_seed(seed)
        keys = torch.randn(size, dim, generator=self.generator, device=device)
        self.register_buffer("keys", F.normalize(keys, dim=1))  # (size, dim)
        self.register_buffer("labels", labels.to(device=device, dtype=torch.long))  # (size,)
        if num_classes is not None:
            self.register_buffer("logits", torch.zeros(size, num_classes, device=device))  # (size, C)

    @property
    def size(self) -> int:
        return self.keys.shape[0]

    @property
    def dim(self) -> int:
        return self.keys.shape[1]

    @torch.no_grad()
    def update(self, indices: torch.Tensor, keys: torch.Tensor, validate: bool = True) -> None:
        """Momentum-update the slots `indices` (unique within a call) with `keys` (len(indices), dim)."""
        if keys.dim() != 2 or keys.shape[1] != self.dim:
            raise ValueError(f"keys must have shape (n, {self.dim}), got {tuple(keys.shape)}")
        if indices.dim() != 1 or indices.shape[0] != keys.shape[0]:
            raise ValueError(f"indices must be 1-D with {keys.shape[0]} entries, got {tuple(indices.shape)}")
        if validate and indices.numel():
            if int(indices.min()) < 0 or int(indices.max()) >= self.size:
                raise ValueError(f"indices must lie in [0, {self.size}), got range "
                                 f"[{int(indices.min())}, {int(indices.max())}]")
            if torch.unique(indices).numel() != indices.numel():
                raise ValueError("indices must be unique within one update (average the views of an image first)")
        indices = indices.to(self.keys.device)
        old = self.keys.index_select(0, indices)
        new = self.momentum * old + (1 - self.momentum) * keys.detach().to(old.dtype)
        self.keys.index_copy_(0, indices, F.normalize(new, dim=1))

    @torch.no_grad()
    def update_last_view(self, indices: torch.Tensor, keys: torch.Tensor, logits: torch.Tensor) -> None:
        """The port's write: `keys` and teacher `logits` of every view of the images `indices` (b,), all
        first views then all second views. The port writes each view to the image's slot from the same
        old value, so the last view's write is what stays: `bank[i] <- normalize(m * bank[i] + (1 - m)
        * normalize(key))` and `logits[i] <- m * logits[i] + (1 - m) * logit`, for the last view."""
        if not hasattr(self, "logits"):
            raise ValueError("this bank keeps no logits (made without num_classes)")
        b = indices.shape[0]
        if keys.shape[0] % max(b, 1) or logits.shape[0] != keys.shape[0]:
            raise ValueError(f"keys and logits must hold whole views of {b} images, got {tuple(keys.shape)} "
                             f"and {tuple(logits.shape)}")
        indices = indices.to(self.keys.device)
        key = F.normalize(keys[-b:].detach().to(self.keys.dtype), dim=1)
        new = self.momentum * self.keys.index_select(0, indices) + (1 - self.momentum) * key
        self.keys.index_copy_(0, indices, F.normalize(new, dim=1))
        old = self.logits.index_select(0, indices)
        self.logits.index_copy_(0, indices, self.momentum * old + (1 - self.momentum) * logits[-b:].detach().to(old.dtype))

    @torch.no_grad()
    def fill(self, keys: torch.Tensor) -> None:
        """Set every slot at once (keys (size, dim), normalised here): a bank that starts from the
        teacher's keys instead of random unit vectors."""
        if keys.shape != self.keys.shape:
            raise ValueError(f"keys must have shape {tuple(self.keys.shape)}, got {tuple(keys.shape)}")
        self.keys.copy_(F.normalize(keys.to(self.keys.dtype), dim=1))

    @torch.no_grad()
    def sample(self, k: int):
        """k distinct slots, uniformly from the whole bank: `(keys (k, dim), labels (k,), indices (k,))`
        (their stored logits: `self.logits[indices]`)."""
        if not 0 < k <= self.size:
            raise ValueError(f"cannot sample k={k} slots from a bank of {self.size}")
        indices = torch.randperm(self.size, generator=self.generator, device=self.keys.device)[:k]
        return self.keys[indices], self.labels[indices], indices

    def state_dict(self, *args, **kwargs):
        state = super().state_dict(*args, **kwargs)
        prefix = kwargs.get("prefix", "")
        state[prefix + "generator_state"] = self.generator.get_state()
        state[prefix + "momentum"] = torch.tensor(self.momentum, dtype=torch.float64)
        return state

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        state = dict(state_dict)
        generator_state = state.pop("generator_state", None)
        momentum = state.pop("momentum", None)
        if strict and generator_state is None:
            raise ValueError("memory bank state has no generator_state")
        if state["keys"].shape != self.keys.shape:
            raise ValueError(f"memory bank shape {tuple(state['keys'].shape)} does not match {tuple(self.keys.shape)}")
        result = super().load_state_dict(state, strict=strict, assign=assign)
        if generator_state is not None:
            self.generator.set_state(generator_state.cpu() if generator_state.device.type != "cpu" else generator_state)
        if momentum is not None:
            self.momentum = float(momentum)
        return result
