"""LW-SupCRD: logit-weighted supervised contrastive representation distillation."""

__version__ = "0.1.0"
