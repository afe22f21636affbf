"""Figures: t-SNE, the 3D hypersphere page, alignment/uniformity, training curves, and the
study-level comparisons. Every file is written atomically."""
from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .analysis import Embeddings  # noqa: E402
from .checkpoint import atomic_write  # noqa: E402


def _save(fig, path: Path) -> None:
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight"))
    plt.close(fig)


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
    fig, ax = plt.subplots(figsize=(8, 7))
    cmap = plt.get_cmap("tab20")
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
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.2))
    axes[0].hist(pos, bins=40, range=(0, 2), color="tab:blue", alpha=0.8)
    axes[0].axvline(pos.mean(), color="k", ls="--", lw=1)
    axes[0].set_title(f"positive pairs (two views)\nmean distance {pos.mean():.3f}")
    axes[0].set_xlabel("||f(x) - f(x+)||")
    axes[1].hist(pair, bins=60, range=(0, 2), density=True, color="tab:orange", alpha=0.8)
    axes[1].set_title(f"all pairs ({keep.sum()} sampled)")
    axes[1].set_xlabel("||f(x) - f(y)||")
    two = sphere_points(x)[:, :2]
    angles = np.arctan2(two[:, 1], two[:, 0])
    cmap = plt.get_cmap("tab10")
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
    skip = {"epoch", "lr", "epoch_seconds", "images_per_second", "train_acc"}
    parts = [k for k in rows[0] if k not in skip]
    epochs = [r["epoch"] for r in rows]
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.6))
    for k in parts:
        axes[0].plot(epochs, [r[k] for r in rows], marker="o", ms=3, label=k)
    axes[0].set_title("loss")
    axes[0].legend(fontsize=7)
    if "train_acc" in rows[0]:
        axes[1].plot(epochs, [r["train_acc"] for r in rows], marker="o", ms=3)
    axes[1].set_title("train accuracy (%)")
    axes[2].plot(epochs, [r["lr"] for r in rows], marker="o", ms=3)
    axes[2].set_title("learning rate")
    for ax in axes:
        ax.set_xlabel("epoch")
    fig.suptitle(log.get("run", ""))
    _save(fig, path)


def _acc(entry: dict) -> float | None:
    return entry.get("metrics", {}).get("probe_test_acc")


def study_figures(results: dict, plots_dir: Path) -> list[Path]:
    """Accuracy against alpha, beta and tau; the bank ablation as grouped bars; alignment vs
    uniformity of every run. Returns the files written."""
    runs = results["runs"]
    written = []
    lw = {n: r for n, r in runs.items() if r["config"].get("method") == "lwsupcrd" and "bank_negatives" not in r["config"]
          and r.get("stage") == "lwsupcrd"}
    sweeps = [("alpha", dict(beta=10.0, temperature=0.07)), ("beta", dict(alpha=1.0, temperature=0.07)),
              ("temperature", dict(alpha=1.0, beta=10.0))]
    series = []
    for key, fixed in sweeps:
        pts = sorted((r["config"][key], _acc(r)) for r in lw.values()
                     if all(r["config"][k] == v for k, v in fixed.items()) and _acc(r) is not None)
        if len(pts) >= 2:
            series.append((key, pts))
    if series:
        fig, axes = plt.subplots(1, len(series), figsize=(4.5 * len(series), 3.6), squeeze=False)
        for ax, (key, pts) in zip(axes[0], series):
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o")
            ax.set_xlabel(key)
            ax.set_ylabel("linear-probe test accuracy (%)")
        fig.suptitle("LW-SupCRD sweeps")
        path = plots_dir / "sweeps_accuracy.png"
        _save(fig, path)
        written.append(path)

    bank = {n: r for n, r in runs.items() if r.get("stage") == "bank_ablation" and _acc(r) is not None}
    if bank:
        groups = {"CRD": [], "LW-SupCRD": []}
        for n, r in bank.items():
            groups["CRD" if r["config"]["method"] == "crd" else "LW-SupCRD"].append(
                ("bank %d" % r["config"]["bank_negatives"] if r["config"].get("bank_negatives") else "no bank", r))
        fig, ax = plt.subplots(figsize=(6, 4))
        for gi, (group, members) in enumerate(groups.items()):
            for k, (label, r) in enumerate(sorted(members, key=lambda m: m[0] != "no bank")):
                m = r["metrics"]
                x = gi + (k - 0.5) * 0.35
                ax.bar(x, m["probe_test_acc"], width=0.33, color="tab:blue" if label == "no bank" else "tab:green",
                       label=label if gi == 0 or not members else None)
                ax.text(x, m["probe_test_acc"], f"{m['probe_test_acc']:.1f}", ha="center", va="bottom", fontsize=8)
        ax.set_xticks(range(len(groups)), list(groups))
        ax.set_ylabel("linear-probe test accuracy (%)")
        handles, labels = ax.get_legend_handles_labels()
        uniq = dict(zip(labels, handles))
        ax.legend(uniq.values(), uniq.keys())
        ax.set_title("memory-bank ablation")
        path = plots_dir / "bank_ablation.png"
        _save(fig, path)
        written.append(path)

    pts = [(n, r["analysis"]["features"]) for n, r in runs.items() if "analysis" in r and r.get("stage") != "projection"
           and r["analysis"]["features"].get("class_alignment") is not None]
    if pts:
        fig, ax = plt.subplots(figsize=(7, 5))
        for n, g in pts:
            ax.scatter(g["class_alignment"], g["uniformity"], s=30, marker="*" if n.startswith("teacher") else "o")
            ax.annotate(n.replace("student_", "").rsplit("_", 2)[0], (g["class_alignment"], g["uniformity"]),
                        fontsize=6, xytext=(3, 3), textcoords="offset points")
        ax.set_xlabel("alignment (same-class pairs) ↓")
        ax.set_ylabel("uniformity ↓")
        ax.set_title("alignment vs uniformity (L2-normalised backbone features, test split)")
        path = plots_dir / "alignment_uniformity.png"
        _save(fig, path)
        written.append(path)
    return written
