"""LW-SupCRD: logit-weighted supervised contrastive representation distillation."""
from . import code

code.install()  # before any other submodule: each run records the code it was computed by

__version__ = "0.1.0"
