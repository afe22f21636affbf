"""The literature's CIFAR-100 benchmark pairs (RepDistiller's 13 teacher-student pairs), the settings
that depend on the pair (the student's learning rate, DKD's beta), the published teachers' accuracy,
and where the published numbers were read."""
from __future__ import annotations

SAME_ARCHITECTURE = ("wrn_40_2-wrn_16_2", "wrn_40_2-wrn_40_1", "resnet56-resnet20", "resnet110-resnet20",
                     "resnet110-resnet32", "resnet32x4-resnet8x4", "vgg13-vgg8")
CROSS_ARCHITECTURE = ("vgg13-MobileNetV2", "ResNet50-MobileNetV2", "ResNet50-vgg8", "resnet32x4-ShuffleV1",
                      "resnet32x4-ShuffleV2", "wrn_40_2-ShuffleV1")
PAIRS = SAME_ARCHITECTURE + CROSS_ARCHITECTURE
# RepDistiller's train_student.py: these students train at lr 0.01 (the others at the recipe's 0.05)
LOW_LR_STUDENTS = ("MobileNetV2", "ShuffleV1", "ShuffleV2")
# RepDistiller's helper/pretrain.py: FT's initialisation trains at lr 0.01 for these students (the others at theirs)
FT_INIT_LR_STUDENTS = ("resnet8", "resnet14", "resnet20", "resnet32", "resnet44", "resnet56", "resnet110", "resnet8x4",
                       "resnet32x4", "wrn_16_1", "wrn_16_2", "wrn_40_1", "wrn_40_2")
REPDISTILLER = "RepDistiller README, commit b84f547 (CRD, Tian et al., ICLR 2020, Table 1)"
MDISTILLER = "mdistiller README, commit a08d46f (DKD, Zhao et al., CVPR 2022)"
# the published teachers' top-1 (%): theirs, beside ours, never mixed
PUBLISHED_TEACHERS = dict(zip(PAIRS, (75.61, 75.61, 72.34, 74.31, 74.31, 79.42, 74.64,
                                       74.64, 79.34, 79.34, 79.42, 79.42, 75.61)))


def published_row(*numbers: float | None) -> dict[str, float]:
    """A method's published top-1 per pair, in PAIRS' order (None: no number published)."""
    return {pair: n for pair, n in zip(PAIRS, numbers, strict=True) if n is not None}


def student_lr(student: str, lr: float) -> float:
    """The student's learning rate as RepDistiller's train_student.py sets it."""
    return 0.01 if student in LOW_LR_STUDENTS else lr


# DKD's beta as mdistiller's per-pair configs give it (configs/cifar100/dkd/*.yaml, commit e8c5bb3; a
# config without DKD.BETA takes its default, 8)
DKD_BETA = {"resnet32x4-resnet8x4": 8.0, "wrn_40_2-wrn_16_2": 6.0, "wrn_40_2-wrn_40_1": 6.0, "resnet56-resnet20": 2.0,
            "resnet110-resnet32": 2.0, "vgg13-vgg8": 6.0, "vgg13-MobileNetV2": 6.0, "ResNet50-MobileNetV2": 8.0,
            "resnet32x4-ShuffleV1": 8.0, "resnet32x4-ShuffleV2": 8.0, "wrn_40_2-ShuffleV1": 8.0}
THIN_RESNETS = ("resnet8", "resnet14", "resnet20", "resnet32", "resnet44", "resnet56", "resnet110")


def dkd_beta(pair: str) -> tuple[float, str]:
    """DKD's beta for a teacher-student pair and where it comes from: mdistiller's config of the
    pair, else stated here by the family of the pair (thin ResNets 2, as mdistiller's two thin-ResNet
    configs; wide ResNets 6, as its two WRN configs; otherwise its default, 8)."""
    if pair in DKD_BETA:
        return DKD_BETA[pair], "mdistiller's config of this pair (e8c5bb3)"
    teacher, _, student = pair.partition("-")
    if teacher in THIN_RESNETS and student in THIN_RESNETS:
        return 2.0, "no mdistiller config: 2, as its thin-ResNet configs (resnet56-resnet20, resnet110-resnet32)"
    if teacher.startswith("wrn") and student.startswith("wrn"):
        return 6.0, "no mdistiller config: 6, as its WRN configs (wrn_40_2-wrn_16_2, wrn_40_2-wrn_40_1)"
    return 8.0, "no mdistiller config: 8, its default"


# Logit standardization's settings per pair (sunshangquan/logit-standardization-KD, commit f6e5aa5): its
# README runs `--logit-stand --base-temp T --kd-weight w` and names each log file
# "KD_TYPE,TEACHER,STUDENT,T,w[,DKD's beta]"; tools/train.py then sets KD's weight to w and its
# temperature to T, and DKD's alpha to 1 w, its beta to beta w, its temperature to T.
LOGIT_STANDARDIZATION = "logit-standardization-KD README, commit f6e5aa5 (Sun et al., CVPR 2024)"
LS_KD = {"resnet32x4-resnet8x4": (2, 9), "vgg13-vgg8": (3, 9), "wrn_40_2-wrn_40_1": (2, 9), "wrn_40_2-wrn_16_2": (2, 9),
         "resnet56-resnet20": (2, 9), "resnet110-resnet32": (2, 9), "resnet110-resnet20": (4, 12),
         "resnet32x4-ShuffleV2": (2, 9), "vgg13-MobileNetV2": (3, 9), "ResNet50-MobileNetV2": (3, 1)}
LS_DKD = {"resnet32x4-resnet8x4": (2, 9, 8.0), "vgg13-vgg8": (2, 15, 2.0), "wrn_40_2-wrn_40_1": (2, 12, 2.0),
          "wrn_40_2-wrn_16_2": (2, 12, 2.0), "resnet56-resnet20": (3, 18, 2.0), "resnet110-resnet32": (2, 15, 2.0),
          "resnet110-resnet20": (2, 15, 2.0), "resnet32x4-ShuffleV2": (2, 9, 8.0), "vgg13-MobileNetV2": (3, 9, 2.0),
          "ResNet50-MobileNetV2": (2, 15, 2.0)}  # a log without beta: its config's (none: DKD's default 8)


def logit_standardization(pair: str, dkd: bool = False) -> tuple[tuple, str]:
    """(T, w) for KD, (T, w, beta) for DKD, with logit standardization on this pair, and where they
    come from: the pair's log in the reference's README, else its README command's defaults (T 2,
    w 9) with DKD's beta as `dkd_beta` states it."""
    table = LS_DKD if dkd else LS_KD
    if pair in table:
        return table[pair], "the pair's log in the logit-standardization README (f6e5aa5)"
    default = (2, 9, dkd_beta(pair)[0]) if dkd else (2, 9)
    return default, "no log of this pair: the README command's T 2, w 9" + (f"; beta {dkd_beta(pair)[1]}" if dkd else "")


# ReviewKD's weight per pair: mdistiller's one CIFAR config (a08d46f, configs/cifar100/reviewkd.yaml,
# resnet32x4-resnet8x4: 5) and dvlab-research/ReviewKD's CIFAR-100/script/reviewKD.sh (cede6ea) for the rest
REVIEWKD = ("mdistiller, commit a08d46f (ReviewKD, Chen et al., CVPR 2021): its code and its one CIFAR config; "
            "the other pairs' weights from dvlab-research/ReviewKD's CIFAR-100/script/reviewKD.sh, commit cede6ea; "
            "neither README has CIFAR-100 numbers")
REVIEWKD_WEIGHT = {"resnet32x4-resnet8x4": 5.0, "wrn_40_2-wrn_16_2": 5.0, "wrn_40_2-wrn_40_1": 5.0,
                   "wrn_40_2-ShuffleV1": 5.0, "resnet32x4-ShuffleV1": 5.0, "resnet32x4-ShuffleV2": 8.0,
                   "resnet56-resnet20": 0.6, "resnet110-resnet32": 1.0}


def reviewkd_weight(pair: str) -> tuple[float, str]:
    """ReviewKD's loss weight for a pair and where it comes from (`REVIEWKD_WEIGHT`); a pair neither
    source configures takes 5, the weight of mdistiller's config and of most of the script's lines."""
    if pair in REVIEWKD_WEIGHT:
        return REVIEWKD_WEIGHT[pair], "its config or script line"
    return 5.0, "no config or script line: 5, mdistiller's and most of the script's"
