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
# **The question.** A student learns from a teacher through a supervised contrastive loss whose pull and
# push are weighted by the teacher's class probabilities (LW-SupCRD). Does that weighting make a better
# student than the same loss without it, than the one-hot teacher's weights, and than the literature's
# distillation methods (KD, CRD, DKD, FitNet, AT, SP, CC, RKD, PKT, NST)?
#
# **The answer** is the first section after the set-up: the comparative figures and the findings, drawn
# from the results file of the run this notebook shows. The stages follow, table by table, for those who
# want to watch the protocol run. This notebook is generated from `desupcon.py` (the single source; edit
# that, then run `jupytext --to ipynb desupcon.py -o DeSupCon.ipynb`). Its parameters cell holds the
# script's defaults; the committed outputs are of the run that `scripts/run_notebook.py` executed, whose
# flags the set-up cell prints first (`flags: ...`), before the settings they resolve to.
#
# ```
# python desupcon.py                                  # the paper study (CIFAR-100, ResNet-50 -> ResNet-18; GPU)
# python desupcon.py --preset evidence --dataset fashion-mnist --data-dir /usr/share/datasets/fashion-mnist
# python desupcon.py --protocol standard --preset evidence --data-dir /usr/share/datasets/fashion-mnist
# python desupcon.py --list                           # the runs, in order
# python desupcon.py --only bank_ablation            # stages or run-name patterns (and what they need)
# ```
#
# Finished runs are cached in `pth_models/` under their configuration's id and reused whenever it comes
# back; set `FORCE_RETRAIN` (or pass `--force-retrain`) to train everything again, and
# `FORCE_RETRAIN_BANK_ABLATION` (`--force-retrain-bank-ablation`) for the bank runs only; `FORCE_RETRAIN`
# may also be a list of stages and run-name patterns (`--force-retrain lwsupcrd,student_baseline_*`).
# In Jupyter, any flag can also be given through the environment variable `LWSUPCRD_ARGS`.

# %% tags=["parameters"]
FORCE_RETRAIN = False  # True: retrain every run; or a list of stages / run-name patterns, e.g. ["student_alpha_*"]
FORCE_RETRAIN_BANK_ABLATION = False  # retrain only the memory-bank ablation runs
PROTOCOL = "lwsupcrd"  # lwsupcrd: the original study | standard: CRD's CIFAR-100 distillation benchmark
PRESET = "paper"  # paper | quick | evidence | smoke (standard protocol: paper | evidence | smoke)
DATASET = None  # None: the preset's (cifar100); or cifar10, fashion-mnist
DATA_DIR = "data"  # where the dataset lives (or is downloaded to)
OUT_DIR = "."  # root of pth_models/, json_results/, plots/
DEVICE = "auto"  # auto | cpu | cuda
SEED = None  # None: the preset's (paper: 42; evidence: seeds 0 to 4)

# %%
import os
import sys

from lwsupcrd.distributed import init_from_env
from lwsupcrd.machine import estimate_hours, set_cpu_threads, standard_estimate
from lwsupcrd.options import StudyConfig, flags_line, in_notebook, parse_args, validate
from lwsupcrd.overview import overview
from lwsupcrd.protocol import left_out
from lwsupcrd.runs import listing
from lwsupcrd.show import present, show_probe, show_stage
from lwsupcrd.study import Study, StudyError
from lwsupcrd.data import DataError
from lwsupcrd.signals import stop_on_sigterm
from lwsupcrd.train import NonFiniteError, TrainingInterrupted

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
    study = Study(config, runs)
except (ValueError, StudyError, OSError) as err:
    stop(str(err))
if not in_notebook():
    stop_on_sigterm()  # `kill <pid>` says what it kept, as Ctrl-C does
print(flags_line())  # the committed notebook's run: these flags over the parameters cell
print("settings:", study.settings)
print(f"results: {study.results_path} (settings id {study.settings_id})")
threads = set_cpu_threads()  # one per usable core, shared by this machine's processes
print(f"device: {study.device} ({threads} CPU threads); outputs under {study.out}")

# %% [markdown]
# ## The runs
# Every run is a row of the registry; `--only` selects some and brings in what they need.

# %%
if config.list_runs:
    print("\n".join(listing([study.runs[name] for name in study.order()])))  # with the settings that differ
    for name, why in left_out(study.settings).items():
        print(f"not run        {name}: {why}")
    if not in_notebook():
        sys.exit(0)
    stop(f"listed {len(study.order())} runs (--list); run the notebook without it to train them")
stages = dict.fromkeys(study.runs[name].stage for name in study.order())
print(f"{len(study.order())} runs in {len(stages)} stages ({', '.join(stages)}); --list prints each with its settings")

# %% [markdown]
# ## Data
# The whole training split is held on the device as one uint8 tensor; both augmented views
# (4-pixel padded random crop, horizontal flip and, as the original, ColorJitter 0.2 unless
# `color_jitter=0`) are produced there batch by batch.

# %%
try:
    study.load_data()
except (DataError, ValueError) as err:
    stop(str(err))
except KeyboardInterrupt:
    stop("interrupted before any run started; nothing was changed")
print(f"train: {tuple(study.train.images.shape)}, test: {tuple(study.test.images.shape)}")
notice = study.other_code_notice()  # cached runs that other code trained, named before any work
if notice:
    print(notice)
try:
    study.measure_floors()  # raw pixels and a random-init student through the same probe: the floors
except KeyboardInterrupt:
    stop("interrupted while measuring the floors, before any run; every finished run is kept")
except OSError as err:  # a full disk, a read-only folder: the results file was left as it was
    stop(f"cannot write {err.filename or 'the results file'}: {err.strerror or err}; nothing was changed")
if study.standard:  # FLOPs of each run over the rate measured here
    print("\n".join(standard_estimate(study)))
else:  # one timed step of the teacher and of a student, extrapolated
    print(f"time estimate on {study.device}: about {estimate_hours(study):.2g} h to train every run of this "
          f"configuration (computed from one timed training step, not measured; cached runs take seconds)")
if study.device.type == "cpu" and config.preset == "paper":
    print("note: no GPU here; `--preset smoke` runs every stage in minutes, `--preset evidence` is CPU-sized.")


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
# ## The answer
# This cell trains every run of the configuration, or reads it from the cache (each run prints one line
# when cached), then draws the comparative figures from the results file alone, also written to
# `plots/<results file's name>/`: every method's score with a dot per seed; the declared comparisons,
# each a paired difference with its 95 % confidence interval and its verdict (Holm-corrected over the
# family); all students' training curves overlaid; and alignment against uniformity. What each figure
# says is written under the findings.

# %%
for stage in dict.fromkeys(study.runs[name].stage for name in study.order()):  # in the order they depend
    run_stage(stage)
if ddp.main:  # rank 0 draws for the group
    try:
        present(*overview(study.results, study.study_plots_dir))
    except KeyboardInterrupt:
        stop("interrupted while drawing the answer's figures; every run and the results file are kept")

# %% [markdown]
# ## The stages
# Each table below averages one stage's experiments over seeds (mean ± sd, n); the per-seed rows and the
# links to every run's own figures (t-SNE, curves, LW-SupCRD's weights, the 3D hypersphere page, in
# `plots/`) are folded beneath it. A stage this configuration does not have says so in one line.
#
# ### 1. Teacher
# Cross-entropy training (original protocol: SGD with a cosine schedule; standard protocol: the references'
# recipe, or a published checkpoint read with `--teacher-checkpoint`). The students can only be read against
# a good teacher: compare its accuracy with the students' in the answer above.

# %%
show_stage(study, "teacher")

# %% [markdown]
# ### 2. The teacher's projection head (original protocol)
# The backbone is frozen; a unit-norm projection head (`proj_head`: the original's MLP, a linear head
# or SupContrast's MLP) is pre-trained on it (`head_pretraining`: the original's cosine-prototype
# classifier, or SupCon on two views). Its keys are what the students are distilled against, and its
# geometry is the teacher row's in every table.

# %%
show_stage(study, "projection")

# %% [markdown]
# ### 3. Students (original protocol)
# Two views per image and a contrastive loss only (the undistilled student: cross-entropy only). For CRD,
# SupCRD and LW-SupCRD the teacher backbone stays frozen while its projection head keeps training with the
# student. Unweighted SupCRD (α = β = 1, no teacher probabilities) is the control that separates the logit
# weighting from "contrast against teacher keys"; the one-hot teacher's SupCRD separates the teacher's
# probabilities from LW-SupCRD's weight strength.

# %%
show_stage(study, "baselines")

# %% [markdown]
# ### LW-SupCRD and its sweeps (original protocol)
# Each sweep moves one value away from the centre (`SWEEP_CENTRE` in `lwsupcrd/methods.py`; adaptive β on).
# The line above the table lists the (α, β, τ, α reading) of every run this configuration trains: the paper
# preset sweeps α in both readings (`weight`: α multiplies the positive's exponential; `logit`: it scales the
# positive's logit), β and τ; the evidence preset runs the centre in both readings only.

# %%
show_stage(study, "lwsupcrd")

# %% [markdown]
# ### Memory-bank ablation (original protocol)
# Weight decay 1e-4 and cosine annealing; a bank of teacher keys with one slot per training image, momentum
# 0.5, the preset's number of negatives per step. Each bank run is compared with its matched control (the
# same run without a bank) in the answer's comparisons.

# %%
show_stage(study, "bank_ablation")

# %% [markdown]
# ### The standard benchmark's students (`--protocol standard`)
# After the teacher, each student trains on one view with γ CE + a KD + b L_distill (the registry's weights,
# `lwsupcrd/methods.py`) and is scored by its own classifier on the test split at the last epoch; the best
# epoch is kept beside it, labelled. On CIFAR-100 the table sets our numbers beside the published ones; on
# other data it has no published column.

# %%
show_stage(study, "distillation")

# %% [markdown]
# ## Linear probe (original protocol)
# Each backbone is frozen, features of un-augmented images are computed once, and a linear classifier is
# trained on them; every run is listed beside its own seed's SupCon, with the floors.

# %%
show_probe(study)

# %% [markdown]
# ## The report
# Every table of the study, with its conditions, built from the results file alone and written beside it
# (ending in `.md`; `python -m lwsupcrd.report <results.json>` rebuilds it without retraining).

# %%
report, figures = study.finish()
present(report, [])
