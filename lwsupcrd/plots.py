"""Figures: t-SNE, the 3D hypersphere page, alignment/uniformity, training curves, LW-SupCRD's
weights, and the study-level comparisons. Figures are built on matplotlib's object API
(`matplotlib.figure.Figure`), so importing this module never selects a backend for the user's
kernel. Every file is written atomically."""
from __future__ import annotations

import math
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.figure import Figure

from .files import atomic_write
from .metrics import Embeddings


def _save(fig: Figure, path: Path) -> None:
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight"))


def _cmap(name: str):
    return matplotlib.colormaps[name]


def _choose_classes(labels: np.ndarray, k: int, seed: int) -> np.ndarray:
    classes = np.unique(labels)
    if len(classes) <= k:
        return classes
    return np.sort(np.random.default_rng(seed).choice(classes, size=k, replace=False))


def _subsample(idx: np.ndarray, k: int, seed: int) -> np.ndarray:
    if len(idx) <= k:
        return idx
    return np.sort(np.random.default_rng(seed).choice(idx, size=k, replace=False))


def tsne_figure(e: Embeddings, class_names: list[str], title: str, path: Path, seed: int,
                num_classes: int = 20, max_points: int = 2000) -> dict:
    """t-SNE of `num_classes` seeded classes, at most `max_points` points, PCA init."""
    from sklearn.manifold import TSNE

    labels = e.labels.cpu().numpy()
    chosen = _choose_classes(labels, num_classes, seed)
    idx = _subsample(np.nonzero(np.isin(labels, chosen))[0], max_points, seed)
    x = e.clean.cpu().numpy()[idx]
    perplexity = float(min(30, max(2, (len(idx) - 1) / 3)))
    xy = TSNE(2, init="pca", random_state=seed, perplexity=perplexity, learning_rate="auto").fit_transform(x)
    fig = Figure(figsize=(8, 7))
    ax = fig.subplots()
    cmap = _cmap("tab20")
    for i, c in enumerate(chosen):
        m = labels[idx] == c
        ax.scatter(xy[m, 0], xy[m, 1], s=6, color=cmap(i % 20), label=class_names[c])
    ax.set_title(f"t-SNE: {title}\n{e.space}, {len(idx)} test images of {len(chosen)} classes")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.legend(fontsize=7, markerscale=2, loc="center left", bbox_to_anchor=(1, 0.5), frameon=False)
    _save(fig, path)
    return {"points": int(len(idx)), "classes": int(len(chosen))}


def sphere_points(x: np.ndarray) -> np.ndarray:
    """PCA to 3 dimensions, then back onto the unit sphere."""
    centered = x - x.mean(0, keepdims=True)
    _, _, vt = np.linalg.svd(centered, full_matrices=False)
    p = centered @ vt[:3].T
    if p.shape[1] < 3:
        p = np.pad(p, ((0, 0), (0, 3 - p.shape[1])))
    return p / np.clip(np.linalg.norm(p, axis=1, keepdims=True), 1e-12, None)


def hypersphere_page(e: Embeddings, class_names: list[str], title: str, path: Path, seed: int,
                     max_points: int = 5000) -> dict:
    """An offline HTML page with two 3D scenes, "All classes" and "10 random classes"; plotly.js is
    the shared `plotly.min.js` beside the page. Legend entries toggle classes in both scenes."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots
    import plotly.colors

    labels = e.labels.cpu().numpy()
    idx = _subsample(np.arange(len(labels)), max_points, seed)
    p = sphere_points(e.clean.cpu().numpy()[idx])
    lab = labels[idx]
    ten = set(_choose_classes(lab, 10, seed).tolist())
    palette = plotly.colors.qualitative.Alphabet + plotly.colors.qualitative.Dark24 + plotly.colors.qualitative.Light24
    fig = make_subplots(rows=1, cols=2, specs=[[{"type": "scene"}, {"type": "scene"}]],
                        subplot_titles=("All classes", "10 random classes"))
    counts = [0, 0]
    for c in np.unique(lab):
        m = lab == c
        name = class_names[c]
        color = palette[int(c) % len(palette)]
        for col, show in ((1, True), (2, int(c) in ten)):
            if not show:
                continue
            fig.add_trace(go.Scatter3d(x=p[m, 0], y=p[m, 1], z=p[m, 2], mode="markers", name=name,
                                       legendgroup=name, showlegend=col == 1,
                                       marker=dict(size=2.5, color=color), hovertemplate=name + "<extra></extra>"),
                          row=1, col=col)
            counts[col - 1] += int(m.sum())
    sphere = dict(xaxis=dict(range=[-1.05, 1.05]), yaxis=dict(range=[-1.05, 1.05]), zaxis=dict(range=[-1.05, 1.05]),
                  aspectmode="cube")
    fig.update_layout(title=f"{title}: {e.space} on the unit sphere (PCA to 3D, renormalised)",
                      scene=sphere, scene2=sphere, height=700, legend=dict(itemsizing="constant"))
    path.parent.mkdir(parents=True, exist_ok=True)
    js = path.parent / "plotly.min.js"
    if not js.exists():
        from plotly.offline import get_plotlyjs

        atomic_write(js, lambda tmp: Path(tmp).write_text(get_plotlyjs()))
    atomic_write(path, lambda tmp: fig.write_html(tmp, include_plotlyjs="plotly.min.js", full_html=True))
    return {"points_all": counts[0], "points_ten": counts[1]}


def alignment_figure(e: Embeddings, class_names: list[str], title: str, path: Path, seed: int,
                     max_pairs: int = 200_000) -> None:
    """Wang & Isola style: positive-pair distances, all pairwise distances, per-class angles."""
    rng = np.random.default_rng(seed)
    v1, v2 = e.view1.cpu().numpy(), e.view2.cpu().numpy()
    x, labels = e.clean.cpu().numpy(), e.labels.cpu().numpy()
    pos = np.linalg.norm(v1 - v2, axis=1)
    i = rng.integers(0, len(x), max_pairs)
    j = rng.integers(0, len(x), max_pairs)
    keep = i != j
    pair = np.linalg.norm(x[i[keep]] - x[j[keep]], axis=1)
    fig = Figure(figsize=(16, 4.6), layout="constrained")
    axes = fig.subplots(1, 3)
    axes[0].hist(pos, bins=40, range=(0, 2), color="tab:blue", alpha=0.8)
    axes[0].axvline(pos.mean(), color="k", ls="--", lw=1)
    axes[0].set_title(f"positive pairs (two views)\nmean distance {pos.mean():.3f}")
    axes[0].set_xlabel("||f(x) - f(x+)||")
    axes[1].hist(pair, bins=60, range=(0, 2), density=True, color="tab:orange", alpha=0.8)
    axes[1].set_title(f"all pairs ({keep.sum()} sampled)")
    axes[1].set_xlabel("||f(x) - f(y)||")
    two = sphere_points(x)[:, :2]
    angles = np.arctan2(two[:, 1], two[:, 0])
    cmap = _cmap("tab10")
    for k, c in enumerate(_choose_classes(labels, 4, seed)):
        axes[2].hist(angles[labels == c], bins=36, range=(-math.pi, math.pi), density=True, alpha=0.5,
                     color=cmap(k), label=class_names[c])
    axes[2].set_title("per-class angle (PCA plane)")
    axes[2].set_xlabel("angle (rad)")
    axes[2].legend(fontsize=7)
    fig.suptitle(f"{title}: alignment and uniformity of the {e.space}")
    _save(fig, path)


def curves_figure(log: dict, path: Path) -> None:
    """Loss parts, train accuracy and learning rate per epoch from a training log."""
    rows = log.get("epochs", [])
    if not rows:
        return
    skip = {"epoch", "lr", "epoch_seconds", "images_per_second", "train_acc", "test_acc"}
    parts = [k for k in dict.fromkeys(k for r in rows for k in r) if k not in skip and not k.startswith("w.")]
    epochs = [r["epoch"] for r in rows]
    accuracy = "train_acc" in rows[0]  # only a loss with a classifier measures it
    fig = Figure(figsize=(14 if accuracy else 9.5, 3.9), layout="constrained")
    axes = fig.subplots(1, 3 if accuracy else 2)
    for k in parts:
        axes[0].plot([r["epoch"] for r in rows if k in r], [r[k] for r in rows if k in r], marker="o", ms=3, label=k)
    axes[0].set_title("loss")
    axes[0].legend(fontsize=7)
    if accuracy:
        axes[1].plot(epochs, [r["train_acc"] for r in rows], marker="o", ms=3, label="train")
        scored = [r for r in rows if "test_acc" in r]  # where the test split was scored
        if scored:
            axes[1].plot([r["epoch"] for r in scored], [r["test_acc"] for r in scored], marker="s", ms=3, label="test")
            axes[1].legend(fontsize=7)
        axes[1].set_title("train and test accuracy (%)" if scored else "train accuracy (%)")
    axes[-1].plot(epochs, [r["lr"] for r in rows], marker="o", ms=3)
    axes[-1].set_title("learning rate")
    for ax in axes:
        ax.set_xlabel("epoch")
    fig.suptitle(log.get("run", ""))
    _save(fig, path)


def weights_figure(log: dict, path: Path) -> None:
    """LW-SupCRD's weights per epoch from a training log: mean and 5th-95th percentile band of the
    teacher's target probability q, the adaptive beta_i, the push weights and the margin
    log(w_push / w_pull), with the share of anchors the teacher gets wrong."""
    rows = [r for r in log.get("epochs", []) if "w.q_mean" in r]
    if not rows:
        return
    epochs = [r["epoch"] for r in rows]
    panels = [("q", "teacher q_i = p_i[y_i]"), ("beta_i", "beta_i"), ("w_push", "push weight w_push"),
              ("margin", "margin log(w_push / w_pull)")]
    fig = Figure(figsize=(15, 3.6), layout="constrained")
    axes = fig.subplots(1, 4)
    for ax, (key, title) in zip(axes, panels):
        ax.fill_between(epochs, [r[f"w.{key}_p05"] for r in rows], [r[f"w.{key}_p95"] for r in rows], alpha=0.25,
                        label="5th-95th percentile")
        means = [r[f"w.{key}_mean"] for r in rows]
        # a constant weight's mean can sit a rounding error outside its own percentiles
        spread = [[max(0.0, m - r[f"w.{key}_p05"]) for m, r in zip(means, rows)],
                  [max(0.0, r[f"w.{key}_p95"] - m) for m, r in zip(means, rows)]]
        ax.errorbar(epochs, means, yerr=spread, marker="o", ms=3, capsize=3, label="mean")
        ax.set_title(title)
        ax.set_xlabel("epoch")
    axes[0].legend(fontsize=7)
    wrong = rows[-1].get("w.teacher_wrong")
    fig.suptitle(f"{log.get('run', '')}: LW-SupCRD weights per epoch"
                 + (f" (teacher wrong on {100 * wrong:.1f}% of anchors)" if wrong is not None else ""))
    _save(fig, path)


def sweep_figure(series: dict[str, list[tuple[float, float]]], path: Path) -> Path:
    """Test accuracy against each swept value; `series` maps a label ("alpha (weight)") to points."""
    fig = Figure(figsize=(4.5 * len(series), 3.6), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(series)))
    for ax, (label, pts) in zip(axes, series.items()):
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o")
        ax.set_xlabel(label)
        ax.set_ylabel("test accuracy (%)")
    fig.suptitle("LW-SupCRD sweeps (the other values at the sweeps' centre)")
    _save(fig, path)
    return path


def bank_figure(pairs: list[tuple[str, float, float]], path: Path) -> Path:
    """Bars of each bank run beside its matched control: `(label, control acc, bank acc)`."""
    import textwrap

    fig = Figure(figsize=(2 + 2.4 * len(pairs), 4.3), layout="constrained")
    ax = fig.subplots()
    for i, (label, control, bank) in enumerate(pairs):
        for x, acc, color, name in ((i - 0.18, control, "tab:blue", "matched control"),
                                    (i + 0.18, bank, "tab:green", "bank run")):
            ax.bar(x, acc, width=0.34, color=color, label=name if i == 0 else None)
            ax.text(x, acc, f"{acc:.1f}", ha="center", va="bottom", fontsize=8)
    ax.set_xticks(range(len(pairs)), [textwrap.fill(p[0], 26) for p in pairs], fontsize=8)
    values = [v for _, control, bank in pairs for v in (control, bank)]
    ax.set_ylim(min(values) - 2, max(values) + 1)  # not from 0: the differences are a point or two
    ax.set_ylabel("linear-probe test accuracy (%), axis not from 0")
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title("memory bank against its matched control (seeds: comparisons.png)")
    _save(fig, path)
    return path


def geometry_figure(points: list[tuple[str, float, float, bool]], space: str, path: Path) -> Path:
    """Alignment against uniformity, one marker per run keyed to a legend (no labels on the points,
    so close runs stay readable); hollow markers: a projection head that training never touched."""
    fig = Figure(figsize=(9, 5), layout="constrained")
    ax = fig.subplots()
    cmap = _cmap("tab20")
    markers = "os^Dv<>pP*Xh"
    for i, (label, align, unif, trained) in enumerate(points):
        color = cmap(i % 20)
        ax.scatter(align, unif, s=45, marker=markers[i % len(markers)], label=label,
                   facecolors=color if trained else "none", edgecolors=color)
    ax.set_xlabel("alignment (same-class pairs) ↓")
    ax.set_ylabel("uniformity ↓")
    ax.set_title(f"alignment vs uniformity ({space}, test split)")
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1, 0.5), frameon=False)
    _save(fig, path)
    return path


def _seed_rows(ax, rows: list[tuple[str, dict[int, float]]], marker: str, color: str) -> None:
    """Row i: a grey dot per seed and the mean ± sd over seeds."""
    for i, (_, by_seed) in enumerate(rows):
        values = np.array(list(by_seed.values()))
        ax.scatter(values, np.full(len(values), i), s=14, color="0.45", zorder=3)
        ax.errorbar(values.mean(), i, xerr=values.std(ddof=1) if len(values) > 1 else 0, fmt=marker, color=color,
                    capsize=3, markersize=6, zorder=4)


def accuracy_figure(rows: list[tuple[str, dict[int, float]]], references: dict[str, float], title: str,
                    path: Path, source: str = "") -> Path:
    """Each method's accuracy: a dot per seed, mean ± sd, and reference lines (floors, teacher).
    `source` goes into the PNG's metadata, so a figure can be checked against its results file."""
    fig = Figure(figsize=(7.5, 0.45 * len(rows) + 1.4))
    ax = fig.add_subplot()
    _seed_rows(ax, rows, "o", "C0")
    for k, (name, x) in enumerate(references.items()):
        ax.axvline(x, color=f"C{k + 1}", linestyle="--", linewidth=1, label=f"{name} {x:.2f}")
    ax.set_yticks(range(len(rows)), [label for label, _ in rows])
    ax.invert_yaxis()
    ax.set_xlabel("accuracy (%): a grey dot per seed, blue mean ± sd")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False)  # outside: no row hidden
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight",
                                               metadata={"Source": source}))
    return path


def forest_figure(rows: list[dict], metric: str, margin: float, path: Path, source: str = "") -> Path:
    """The declared comparisons, run − reference: a grey dot per seed, the mean with its 95 %
    confidence interval, zero and the ±`margin` band marked, and each row's verdict at its right;
    `rows` are `comparisons.family` rows that were run. `source` goes into the PNG's metadata."""
    import textwrap

    fig = Figure(figsize=(9, 0.5 * len(rows) + 1.5))
    ax = fig.add_subplot()
    ax.axvspan(-margin, margin, color="0.9", zorder=0)
    ax.axvline(0, color="0.2", linewidth=1)
    for y, r in enumerate(rows):
        ax.plot(list(r["diffs"].values()), [y - 0.22] * len(r["diffs"]), "o", color="0.45", ms=3.5, zorder=2)
        colour = {"better": "C2", "worse": "C3"}.get(r["verdict"], "C0")
        if r["ci"] is not None:
            ax.plot(r["ci"], [y, y], color=colour, linewidth=2, zorder=3)
        ax.plot([r["mean"]], [y], "D", color=colour, ms=5, zorder=4)
    ax.set_yticks(range(len(rows)), [textwrap.fill(r["what"], 60) for r in rows], fontsize=8)
    ax.invert_yaxis()
    right = ax.secondary_yaxis("right")
    right.set_yticks(range(len(rows)), [r["verdict"] for r in rows], fontsize=8)
    ax.set_xlabel(f"Δ {metric} (pp), run − reference: grey dots per seed (just above), mean with its 95 % CI; "
                  f"band ±{margin:g}")
    ax.set_title("the declared comparisons, paired by seed (verdicts: Holm-corrected, right)", fontsize=9)
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight",
                                               metadata={"Source": source}))
    return path


def curves_overlay_figure(series: dict[str, dict[str, list[list[float]]]], path: Path) -> Path:
    """Every method's training curves on shared axes: per panel (a logged quantity) and method, the
    mean over seeds as a line and min–max over seeds as a band; `series[panel][method]` holds one
    list of per-epoch values per seed."""
    panels = list(series)
    fig = Figure(figsize=(5.2 * len(panels) + 2.6, 4.2), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(panels)))
    cmap = _cmap("tab20")
    methods = list(dict.fromkeys(m for panel in series.values() for m in panel))
    for ax, panel in zip(axes, panels):
        for i, method in enumerate(methods):
            runs = series[panel].get(method)
            if not runs:
                continue
            n = min(len(r) for r in runs)
            values = np.array([[np.nan if v is None else v for v in r[:n]] for r in runs], dtype=float)
            measured = ~np.isnan(values).any(0)  # epochs where every seed has a value (the test split: scored ones)
            epochs, values = np.arange(1, n + 1)[measured], values[:, measured]
            ax.plot(epochs, values.mean(0), color=cmap(i % 20), linewidth=1.3, label=method)
            if len(runs) > 1:
                ax.fill_between(epochs, values.min(0), values.max(0), color=cmap(i % 20), alpha=0.18, linewidth=0)
        ax.set_xlabel("epoch")
        ax.set_title(panel, fontsize=9)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=7, loc="outside right center", frameon=False)
    fig.suptitle("training curves: mean over seeds, band min–max over seeds", fontsize=10)
    _save(fig, path)
    return path


def geometry_errorbar_figure(points: list[tuple[str, tuple[float, float], tuple[float, float]]], space: str,
                             path: Path) -> Path:
    """Alignment against uniformity per method, mean with ± sd over seeds on both axes:
    `(label, (alignment mean, sd), (uniformity mean, sd))`."""
    fig = Figure(figsize=(9, 5), layout="constrained")
    ax = fig.subplots()
    cmap = _cmap("tab20")
    markers = "os^Dv<>pP*Xh"
    for i, (label, (a, a_sd), (u, u_sd)) in enumerate(points):
        ax.errorbar(a, u, xerr=a_sd, yerr=u_sd, fmt=markers[i % len(markers)], color=cmap(i % 20), capsize=2,
                    markersize=6, label=label)
    ax.set_xlabel("alignment (same-class pairs) ↓")
    ax.set_ylabel("uniformity ↓")
    ax.set_title(f"alignment vs uniformity ({space}, test split): mean ± sd over seeds", fontsize=9)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1, 0.5), frameon=False)
    _save(fig, path)
    return path
