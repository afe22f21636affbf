# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # LW-SupCRD: logit-weighted supervised contrastive representation distillation
#
# This notebook is generated from `desupcon.py` (the single source; edit that, then run
# `jupytext --to ipynb desupcon.py -o DeSupCon.ipynb`). It runs the whole study top to bottom:
#
# 1. the teacher, trained with cross-entropy;
# 2. the teacher's projection head, trained with SupCon on its frozen backbone;
# 3. the students: undistilled, SupCon, CRD (our InfoNCE form, and its class-aware control), LW-SupCRD
#    with its alpha / beta / tau sweeps, and the memory-bank ablation;
# 4. a linear probe on every backbone;
# 5. the geometry of every representation, the figures, and the report.
#
# ```
# python desupcon.py                                  # the paper study (CIFAR-100, ResNet-50 -> ResNet-18; GPU)
# python desupcon.py --preset quick --dataset fashion-mnist --data-dir /usr/share/datasets/fashion-mnist
# python desupcon.py --list                           # the runs, in order
# python desupcon.py --only NAME[,NAME...]            # runs printed by --list (and what they need)
# python desupcon.py --protocol standard --pair resnet32x4-resnet8x4   # CRD's CIFAR-100 benchmark
# ```
#
# Finished runs are cached in `pth_models/` and reused when their configuration matches; set
# `FORCE_RETRAIN` (or pass `--force-retrain`) to train everything again, and
# `FORCE_RETRAIN_BANK_ABLATION` (`--force-retrain-bank-ablation`) for the bank runs only; `FORCE_RETRAIN` may
# also be a list of stages and run-name patterns (`--force-retrain lwsupcrd,student_baseline_*`).
# In Jupyter, flags can also be given through the environment variable `LWSUPCRD_ARGS`.

# %% tags=["parameters"]
FORCE_RETRAIN = False  # True: retrain every run; or a list of stages / run-name patterns, e.g. ["student_alpha_*"]
FORCE_RETRAIN_BANK_ABLATION = False  # retrain only the memory-bank ablation runs
PROTOCOL = "lwsupcrd"  # lwsupcrd: the original study | standard: CRD's CIFAR-100 distillation benchmark
PRESET = "paper"  # paper | quick | evidence | smoke (standard protocol: paper | smoke)
DATASET = None  # None: the preset's (cifar100); or cifar10, fashion-mnist
DATA_DIR = "data"  # where the dataset lives (or is downloaded to)
OUT_DIR = "."  # root of pth_models/, json_results/, plots/
DEVICE = "auto"  # auto | cpu | cuda
SEED = None  # None: the preset's (paper: 42; evidence: seeds 0, 1, 2)

# %%
import os
import sys

from lwsupcrd.distributed import init_from_env
from lwsupcrd.machine import estimate_cpu_hours, set_cpu_threads, standard_estimate
from lwsupcrd.options import StudyConfig, in_notebook, parse_args, validate
from lwsupcrd.show import present, show_probe, show_stage
from lwsupcrd.study import Study, StudyError
from lwsupcrd.data import DataError
from lwsupcrd.train import NonFiniteError, TrainingInterrupted, stop_on_sigterm

config = parse_args(None, StudyConfig(protocol=PROTOCOL, preset=PRESET, dataset=DATASET, data_dir=DATA_DIR, out_dir=OUT_DIR,
                                      device=DEVICE, seed=SEED, force_retrain=FORCE_RETRAIN,
                                      force_retrain_bank_ablation=FORCE_RETRAIN_BANK_ABLATION))


class StudyStopped(Exception):
    def _render_traceback_(self):  # Jupyter shows the line, not a traceback
        return [f"stopped: {self}"]


def stop(message: str):
    """One clear line, then stop: an exit code in a shell, an exception (ending Run All) in a notebook."""
    if in_notebook():
        raise StudyStopped(message)
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


ddp = init_from_env(config.device)  # torchrun: one process per GPU (or CPU worker)
if not ddp.main:
    sys.stdout = open(os.devnull, "w")  # rank 0 speaks and writes for the group
try:
    runs = validate(config)
except ValueError as err:
    stop(str(err))
study = Study(config, runs)
if not in_notebook():
    stop_on_sigterm()  # `kill <pid>` says what it kept, as Ctrl-C does
print("settings:", study.settings)
print(f"results: {study.results_path} (settings id {study.settings_id})")
threads = set_cpu_threads()  # one per usable core, shared by this machine's processes
print(f"device: {study.device} ({threads} CPU threads); outputs under {study.out.resolve()}")

# %% [markdown]
# ## The runs
# Every run is a row of the registry; `--only` selects some and brings in what they need.

# %%
if config.list_runs:
    for name in study.order():
        print(f"{study.runs[name].stage:14s} {name}")
    if not in_notebook():
        sys.exit(0)
    stop(f"listed {len(study.order())} runs (--list); run the notebook without it to train them")

# %% [markdown]
# ## Data
# The whole training split is held on the device as one uint8 tensor; both augmented views
# (4-pixel padded random crop, horizontal flip) are produced there batch by batch.

# %%
try:
    study.load_data()
except (DataError, ValueError) as err:
    stop(str(err))
print(f"train: {tuple(study.train.images.shape)}, test: {tuple(study.test.images.shape)}")
notice = study.other_code_notice()  # cached runs that other code trained, named before any work
if notice:
    print(notice)
study.measure_floors()  # raw pixels and a random-init student through the same probe: the floors
if study.standard:  # FLOPs of each run over the rate measured here
    print("\n".join(standard_estimate(study)))
    if study.device.type == "cpu" and config.preset == "paper":
        print("note: no GPU here; `--protocol standard --preset smoke` runs every method in minutes.")
elif study.device.type == "cpu" and config.preset == "paper":
    print(f"note: no GPU here. The paper study would take about {estimate_cpu_hours(study):.0f} hours on "
          f"this CPU; `--preset quick` runs a CPU-sized version in minutes.")


def run_stage(stage: str) -> None:
    try:
        study.run_all([name for name in study.order() if study.runs[name].stage == stage])
    except (NonFiniteError, TrainingInterrupted, StudyError) as err:  # one line; finished runs stay on disk
        stop(str(err))
    except KeyboardInterrupt:
        stop("interrupted between epochs; every finished run and the last saved epoch are kept. Rerun the same "
             "command to continue.")
    except OSError as err:  # a full disk, a read-only folder: the file being written was left as it was
        stop(f"cannot write {err.filename or 'an output'}: {err.strerror or err}; every finished run and the last "
             f"saved epoch are kept, and the file being written is unchanged. Rerun the same command once it is fixed.")


# %% [markdown]
# ## 1. Teacher
# Cross-entropy training with SGD and a cosine schedule; the line above the table gives this
# configuration's architecture, epochs, learning rate and batch. Look at the teacher's own head
# accuracy beside its linear probe: the students can only be read against a good teacher.

# %%
run_stage("teacher")
show_stage(study, "teacher")

# %% [markdown]
# ## 2. The teacher's projection head
# The backbone is frozen; a 64-dimensional unit-norm projection head (`proj_head`: linear, the
# original's cosine projection, or an MLP) is trained with SupCon on two views. Its keys are what
# the students are distilled against, and its geometry is the teacher row's in every table.

# %%
run_stage("projection")
show_stage(study, "projection")

# %% [markdown]
# ## 3. Students
# Two views per image and a contrastive loss only (the undistilled student: cross-entropy only).
# For CRD, SupCRD and LW-SupCRD the teacher backbone stays frozen while its projection head keeps
# training with the student. Unweighted SupCRD (alpha = beta = 1, no teacher probabilities) is the
# control that separates the logit weighting from "contrast against teacher keys".

# %%
run_stage("baselines")
show_stage(study, "baselines")

# %% [markdown]
# ### LW-SupCRD and its sweeps
# Each sweep moves one value away from the centre (`SWEEP_CENTRE` in `lwsupcrd/protocol.py`;
# adaptive beta on); the alpha sweep runs in both readings of where alpha acts (`weight`: it
# multiplies the positive's exponential; `logit`: it scales the positive's logit). The line above
# the table below lists the (alpha, beta, tau, reading) of every run this preset trains. Look for
# whether any alpha moves the accuracy in the `weight` reading, where it acts only as a margin.

# %%
run_stage("lwsupcrd")
show_stage(study, "lwsupcrd")

# %% [markdown]
# ### Memory-bank ablation
# Weight decay 1e-4 and cosine annealing; a bank of teacher keys with one slot per training
# image, momentum 0.5, the preset's number of negatives per step. Each bank run is compared with
# its matched control (the same run without a bank); one more run starts the bank from the
# teacher's keys instead of random unit vectors.

# %%
run_stage("bank_ablation")
show_stage(study, "bank_ablation")

# %% [markdown]
# ### The standard benchmark's students (`--protocol standard`)
# Under `--protocol standard` (CRD's CIFAR-100 benchmark) the stages above have no runs: after the
# teacher (trained with the references' recipe, or read with `--teacher-checkpoint`), each student
# trains on one view with gamma CE + a KD + b L_distill and is scored by its own classifier on the
# test split at the last epoch; the table sets our numbers beside the published ones. Under the
# original protocol this cell does nothing.

# %%
run_stage("distillation")
show_stage(study, "distillation")

# %% [markdown]
# ## 4. Linear probe
# Each backbone is frozen, features of un-augmented images are computed once, and a linear
# classifier is trained on them.

# %%
show_probe(study)

# %% [markdown]
# ## 5. Geometry, figures and the report
# Every run above was analysed on the test split as it finished: alignment of same-class pairs,
# uniformity, the alignment of two augmented views, intra/inter-class distances, a t-SNE, a 3D
# hypersphere page and an alignment/uniformity figure (in `plots/`). The study-level figures and
# the report (beside the results file, ending in `.md`) are built from the results file alone
# (`python -m lwsupcrd.report <results.json>` rebuilds the report without retraining).

# %%
report, figures = study.finish()
present(report, figures)
