"""Geometry of each trained model's representations on the test split; `analyze_run`, which
records a run's metrics in the results and has `plots` draw its figures. The study's own figures,
drawn from the results file alone, are `overview.study_figures`."""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F

from .data import DatasetInfo, Split, augment
from . import plots
from .metrics import Embeddings, alignment, class_alignment, class_distances, uniformity
from .models import ModelWrapper
from .probe import embed

# runs whose training shaped the projection head; for the others it is untrained
PROJECTION_METHODS = ("projection", "supcon", "crd", "lwsupcrd")


def embed_test(model: ModelWrapper, test: Split, info: DatasetInfo, seed: int,
               channels_last: bool = False) -> dict[str, Embeddings]:
    """Both embedding spaces of the test split; the two views come from a seeded generator."""
    gen = torch.Generator(device=test.images.device).manual_seed(seed)
    feats, projs, _ = embed(model, test.images, info, channels_last=channels_last)
    views = []
    model.eval()
    with torch.no_grad():
        for _ in range(2):
            f_parts, p_parts = [], []
            for start in range(0, len(test), 1024):
                x = augment(test.images[start:start + 1024], info, gen)
                f, p, _ = model(x.contiguous(memory_format=torch.channels_last) if channels_last else x)
                f_parts.append(f.float())
                p_parts.append(p.float())
            views.append((torch.cat(f_parts), torch.cat(p_parts)))
    labels = test.labels
    return {
        "features": Embeddings("features", F.normalize(feats, dim=1), F.normalize(views[0][0], dim=1),
                               F.normalize(views[1][0], dim=1), labels),
        "projection": Embeddings("projection", F.normalize(projs, dim=1), views[0][1], views[1][1], labels),
    }


def geometry(e: Embeddings) -> dict[str, float]:
    """All metrics of one embedding space, stated with N and the dimension."""
    x, labels = e.clean.cpu(), e.labels.cpu()
    try:
        same_class = class_alignment(x, labels)
    except ValueError:  # no class with two test images
        same_class = None
    out = {"n": int(x.shape[0]), "dim": int(x.shape[1]),
           "class_alignment": same_class,
           "uniformity": uniformity(x, t=2),
           "view_alignment": alignment(e.view1.cpu(), e.view2.cpu())}  # squared distances (its default)
    out.update(class_distances(x, labels))
    return out


def analyze(model: ModelWrapper, method: str, test: Split, info: DatasetInfo, seed: int,
            channels_last: bool = False):
    """`(metrics, embeddings)`: metrics per space. Figures show the projection, the space the
    contrastive losses act in and the original's geometry was measured in, for every run alike;
    a run whose training never touched its head is labelled so."""
    spaces = embed_test(model, test, info, seed, channels_last)
    metrics = {name: geometry(e) for name, e in spaces.items()}
    metrics["figure_space"] = "projection"
    metrics["projection_head_trained"] = method in PROJECTION_METHODS
    if method not in PROJECTION_METHODS:
        spaces["projection"] = replace(spaces["projection"], space="projection (untrained head)")
    return metrics, spaces


def figure_paths(plots_dir: Path, name: str) -> dict[str, Path]:
    return {"tsne": plots_dir / f"tsne_{name}.png", "hypersphere": plots_dir / f"{name}_hypersphere.html",
            "alignment": plots_dir / f"{name}_alignment.png", "curves": plots_dir / f"{name}_curves.png",
            "weights": plots_dir / f"{name}_weights.png"}


def _training_log(path) -> dict | None:
    """A run's training log, or None when it is missing or damaged (its figures are then skipped,
    and a damaged one is named)."""
    if not path.exists():
        return None
    try:
        log = json.loads(path.read_text())
        if isinstance(log, dict) and isinstance(log.get("epochs"), list) and all(isinstance(r, dict) for r in log["epochs"]):
            return log
    except (OSError, ValueError):
        pass
    print(f"training log {path} is damaged: its curves are not drawn (the run itself is unaffected)")
    return None


def analyze_run(study, run, model: ModelWrapper, cached: bool) -> None:
    """A run's geometry metrics into its entry of `study.results`, and its figures (the standard
    protocol: its curves only); skipped for a cached run whose metrics and figures exist, unless forced."""
    if run.stage == "initialisation":  # a two-stage method's first stage: its student is read after distilling
        return
    entry = study.results["runs"][run.name]
    figures = figure_paths(study.plots_dir, study.files.key(run.name))
    log_path = study.files.log(run.name)
    log = _training_log(log_path)
    if log is None:
        figures.pop("curves")
    if log is None or run.cfg["method"] != "lwsupcrd":
        figures.pop("weights")
    standard = run.cfg.get("protocol") == "standard"
    if standard:  # geometry and curves only: the backbone's geometry, no t-SNE or hypersphere page
        figures = {k: p for k, p in figures.items() if k == "curves"}
    if (cached and "analysis" in entry and not study.cfg.force_analysis and not study.forced(run)
            and all(p.exists() for p in figures.values())):
        return
    start = time.perf_counter()
    cfg = entry["config"]
    metrics, spaces = analyze(model, cfg["method"], study.test, study.info, cfg["seed"],
                              channels_last=bool(cfg.get("channels_last")))
    if standard:
        metrics["figure_space"] = "features"  # not every method trains the projection head
    else:
        shown = spaces[metrics["figure_space"]]
        names = study.test.class_names
        metrics["tsne"] = plots.tsne_figure(shown, names, run.name, figures["tsne"], cfg["seed"])
        metrics["hypersphere"] = plots.hypersphere_page(shown, names, run.name, figures["hypersphere"], cfg["seed"])
        plots.alignment_figure(shown, names, run.name, figures["alignment"], cfg["seed"])
    if "curves" in figures:
        plots.curves_figure(log, figures["curves"])
    if "weights" in figures:
        plots.weights_figure(log, figures["weights"])
    metrics["figures"] = {k: str(p.relative_to(study.out)) if p.is_relative_to(study.out) else str(p)
                          for k, p in figures.items()}
    metrics["seconds"] = time.perf_counter() - start
    entry["analysis"] = metrics
