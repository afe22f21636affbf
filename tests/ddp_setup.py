"""The fixed problem that the 2-process test and its single-process reference share."""
import torch

from lwsupcrd.data import DATASETS, Split
from lwsupcrd.models import ModelWrapper

CFG = dict(method="lwsupcrd", arch="resnet8", epochs=1, batch_size=16, optimizer="adam", lr=1e-3, weight_decay=0.0,
           schedule="constant", temperature=0.07, alpha=1.0, beta=10.0, adaptive_beta=True, bank_negatives=8,
           bank_momentum=0.5, seed=0)
# the standard protocol's richest student: CE + KD + LW-SupCRD with the bank, on one view
STANDARD_CFG = dict(CFG, method="standard", recipe="lwsupcrd_kd", gamma=1.0, kd_weight=1.0, kd_temperature=4.0,
                    distill="lwsupcrd",
                    distill_weight=0.8)


def make_split():
    info = DATASETS["cifar10"]
    gen = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (16, 3, 32, 32), generator=gen, dtype=torch.uint8)
    labels = torch.arange(16) % 4
    return Split(images, labels, torch.arange(16), [str(i) for i in range(10)]), info


def make_models():
    torch.manual_seed(0)
    student = ModelWrapper("resnet8", 10)
    teacher = ModelWrapper("resnet8", 10)
    teacher.requires_grad_(False)
    teacher.projection.requires_grad_(True)
    return student, teacher
