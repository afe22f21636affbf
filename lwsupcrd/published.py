"""Published teachers: RepDistiller checkpoints, the ones CRD's CIFAR-100 benchmark and its
successors distil from (RepDistiller's `scripts/fetch_pretrained_teachers.sh`; mdistiller re-hosts
the same files): a dict with the network's state dict under "model"; and the CIFAR-100 ResNet-50
the original work distils from, the `detectors` package's `resnet50_cifar100` (timm's ResNet-50 with
a 3x3 stride-1 stem and no max-pool; distributed on the Hugging Face hub as
`edadaltocg/resnet50_cifar100`, a plain state dict), whose key names are ours.

Our `resnet8` ... `resnet110`, `resnet8x4` and `resnet32x4` have RepDistiller's key names; the wide
ResNets have the same tensors under other names, and VGG, MobileNetV2 and the ShuffleNets their
classifier, mapped here. RepDistiller's `ResNet50` is torchvision's Bottleneck ResNet-50 with the CIFAR
stem, our `resnet50`, under its names (`shortcut` for `downsample`, `linear` for `fc`). `tests/fixtures/repdistiller_reference.pt`
holds every key and shape of the reference definitions and, for the smallest network of each family,
the reference output for `synthetic_state` weights; it was recorded by
`scripts/record_reference_fixture.py` from RepDistiller's own code, which never enters the project.
"""
from __future__ import annotations

import re
import zlib
from pathlib import Path

import torch
import torch.nn as nn

from .checkpoint import FORMAT, CheckpointError, load_checkpoint, safe_load
from .models import create_model

# the architectures a published teacher or student checkpoint can be loaded into
PUBLISHED_ARCHS = ("resnet8", "resnet14", "resnet20", "resnet32", "resnet44", "resnet56", "resnet110",
                   "resnet8x4", "resnet32x4", "wrn_16_1", "wrn_16_2", "wrn_40_1", "wrn_40_2",
                   "vgg8", "vgg11", "vgg13", "vgg16", "vgg19", "MobileNetV2", "ShuffleV1", "ShuffleV2", "ResNet50")
# the architectures a timm-layout file (detectors' CIFAR ResNets, the original's teacher) loads into
TIMM_ARCHS = ("resnet18", "resnet50")
# the original work's teacher, by its hub name (`--teacher-checkpoint hub:<name>`), and where the hub serves it
ORIGINAL_TEACHER = "edadaltocg/resnet50_cifar100"
HUB_URL = "https://huggingface.co/{name}/resolve/main/pytorch_model.bin"
# RepDistiller's preprocessing of CIFAR-100: a published teacher must see its own
REFERENCE_NORMALIZATION = ((0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761))

_WRN_TO_OURS = ((re.compile(r"^(block\d)\.layer\.(\d+)\."), r"\1.\2."), (re.compile(r"\.convShortcut\."), ".shortcut."),
                (re.compile(r"^bn1\."), "bn."))
_WRN_TO_REFERENCE = ((re.compile(r"^(block\d)\.(\d+)\."), r"\1.layer.\2."), (re.compile(r"\.shortcut\."), ".convShortcut."),
                     (re.compile(r"^bn\."), "bn1."))
# (to ours, to the reference) per family whose names differ: the WRNs' blocks, VGG's classifier
_RULES = {"wrn": (_WRN_TO_OURS, _WRN_TO_REFERENCE),
          "vgg": (((re.compile(r"^classifier\."), "fc."),), ((re.compile(r"^fc\."), "classifier."),)),
          "MobileNetV": (((re.compile(r"^(classifier|fc)\.0\."), "fc."),), ((re.compile(r"^fc\."), "classifier.0."),)),
          "ShuffleV": (((re.compile(r"^linear\."), "fc."),), ((re.compile(r"^fc\."), "linear."),)),
          "ResNet": (((re.compile(r"^(linear|fc)\."), "fc."), (re.compile(r"\.shortcut\."), ".downsample.")),
                     ((re.compile(r"^fc\."), "linear."), (re.compile(r"\.downsample\."), ".shortcut.")))}


def _family(arch: str) -> str:
    return re.match(r"[A-Za-z]+", arch).group(0)


def _rename(key: str, rules) -> str:
    for pattern, repl in rules:
        key = pattern.sub(repl, key)
    return key


def to_ours(arch: str, key: str) -> str:
    """Our name of a reference (RepDistiller) state-dict key for this architecture."""
    return _rename(key, _RULES[_family(arch)][0]) if _family(arch) in _RULES else key


def to_reference(arch: str, key: str) -> str:
    """RepDistiller's name of one of our state-dict keys for this architecture."""
    return _rename(key, _RULES[_family(arch)][1]) if _family(arch) in _RULES else key


def reference_state(arch: str, model: nn.Module) -> dict[str, torch.Tensor]:
    """`model`'s state dict under RepDistiller's key names (what a published file holds)."""
    return {to_reference(arch, k): v for k, v in model.state_dict().items()}


def _describe(keys: list[str], limit: int = 4) -> str:
    return ", ".join(keys[:limit]) + (f" and {len(keys) - limit} more" if len(keys) > limit else "")


def load_published(path: str | Path, arch: str, num_classes: int = 100) -> nn.Module:
    """The backbone `arch` (with its classifier) holding the weights of a RepDistiller-format
    checkpoint, read with weights_only=True; every key and shape must match, or one CheckpointError
    line names the mismatching keys. The one absence accepted is that of every BatchNorm's
    `num_batches_tracked` together (files saved by PyTorch 0.4.0, as RepDistiller's were)."""
    if arch not in PUBLISHED_ARCHS:
        raise ValueError(f"no published checkpoints for {arch!r}; supported: {', '.join(PUBLISHED_ARCHS)}")
    return _published_state(safe_load(path), path, arch, num_classes)


def load_teacher_file(path: str | Path, arch: str, num_classes: int, in_channels: int = 3) -> nn.Module:
    """The backbone `arch` from a teacher file: one of our checkpoints (its backbone), a RepDistiller
    one (`load_published`) or a timm-layout one. A file that does not fit the architecture, the
    classes or the dataset's channels is one CheckpointError line."""
    state = safe_load(path)
    if isinstance(state, dict) and state.get("format") == FORMAT:
        ckpt = load_checkpoint(path)
        if ckpt["config"].get("arch") != arch:
            raise CheckpointError(f"{path} holds a {ckpt['config'].get('arch')}, not a {arch}")
        state = {k[len("backbone."):]: v for k, v in ckpt["state_dict"].items() if k.startswith("backbone.")}
        return _published_state({to_reference(arch, k): v for k, v in state.items()}, path, arch, num_classes,
                                in_channels)
    if arch not in PUBLISHED_ARCHS + TIMM_ARCHS:
        raise CheckpointError(f"{path}: not an lwsupcrd checkpoint, and {arch} has no published format")
    return _published_state(state, path, arch, num_classes, in_channels)


def _published_state(state, path, arch: str, num_classes: int, in_channels: int = 3) -> nn.Module:
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: not a state dict, nor a checkpoint holding one under 'model'")
    if state and all(k.startswith("module.") for k in state):  # saved from DataParallel
        state = {k[len("module."):]: v for k, v in state.items()}
    # the original's loader renames a timm head saved as `final_classifier` or `classifier` to `fc`
    state = {re.sub(r"^(final_classifier|classifier)\.", "fc.", k): v for k, v in state.items()}
    model = create_model(arch, num_classes, in_channels)
    ours = model.state_dict()
    mapped = {to_ours(arch, k): v for k, v in state.items()}
    untracked = [k for k in ours if k.endswith(".num_batches_tracked") and k not in mapped]
    if len(untracked) == sum(k.endswith(".num_batches_tracked") for k in ours):
        # saved by PyTorch 0.4.0 (RepDistiller's), whose BatchNorm kept no such counter; evaluation never reads it
        mapped.update({k: torch.zeros((), dtype=torch.long) for k in untracked})
    missing = [to_reference(arch, k) for k in ours if k not in mapped]
    unexpected = [k for k in state if to_ours(arch, k) not in ours]
    shapes = [f"{to_reference(arch, k)} {tuple(v.shape)} (expected {tuple(ours[k].shape)})"
              for k, v in mapped.items() if k in ours and v.shape != ours[k].shape]
    if missing or unexpected or shapes:
        problems = [f"missing {_describe(missing)}" if missing else "",
                    f"unexpected {_describe(unexpected)}" if unexpected else "",
                    f"shape {_describe(shapes, 2)}" if shapes else ""]
        raise CheckpointError(f"{path} does not fit {arch} with {num_classes} classes and {in_channels} input "
                              f"channel{'s' if in_channels > 1 else ''}: "
                              + "; ".join(p for p in problems if p))
    model.load_state_dict(mapped)
    return model


def synthetic_state(keys: list[tuple[str, tuple[int, ...]]], seed: int = 0) -> dict[str, torch.Tensor]:
    """Deterministic weights for the given (name, shape) list, the same on every machine: what the
    reference fixture's outputs were recorded with, so that no trained weights need shipping."""
    state = {}
    for name, shape in keys:
        if name.endswith("num_batches_tracked"):
            state[name] = torch.zeros(shape, dtype=torch.long)
            continue
        g = torch.Generator().manual_seed(seed * 1_000_003 + zlib.crc32(name.encode()))
        x = torch.rand(shape, generator=g, dtype=torch.float64)
        if name.endswith("running_var"):
            x = 0.5 + x
        elif name.endswith(("running_mean", "bias")):
            x = 0.2 * (x - 0.5)
        elif name.endswith("weight") and len(shape) == 1:  # BatchNorm scale
            x = 0.5 + 0.5 * x
        else:  # conv and linear weights, scaled by fan-in so that activations keep their size
            fan_in = max(1, int(torch.tensor(shape[1:]).prod())) if len(shape) > 1 else 1
            x = (x - 0.5) * (12.0 / fan_in) ** 0.5
        state[name] = x.float()
    return state


def hub_path(name: str, out_dir: str | Path) -> Path:
    """Where hub teacher `name` is kept once downloaded: `pth_models/hub/` under the out-dir."""
    return (Path(out_dir) / "pth_models" / "hub" / (name.replace("/", "__") + ".bin")).resolve()


def fetch_hub_teacher(name: str, out_dir: str | Path) -> Path:
    """The hub file of teacher `name` (e.g. ORIGINAL_TEACHER), downloaded once to `hub_path` (written
    atomically); offline, one OSError line saying where to put the file instead."""
    import urllib.request

    from .files import atomic_write

    path = hub_path(name, out_dir)
    if path.is_file():
        return path
    url = HUB_URL.format(name=name)

    def write(tmp):
        with urllib.request.urlopen(url, timeout=60) as response, open(tmp, "wb") as f:
            while chunk := response.read(1 << 20):
                f.write(chunk)

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, write)
    except OSError as err:
        raise OSError(f"cannot download the teacher {name} from {url} ({getattr(err, 'reason', err)}); "
                      f"download it elsewhere and pass --teacher-checkpoint PATH") from None
    return path
