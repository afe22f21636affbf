"""The answer, first: a study's comparative figures and its one-line findings, drawn from its
results file alone, for either protocol. The notebook opens with them; they are also written to
`plots/<results file's name>/`; and the original protocol's study figures (`study_figures`).

    accuracy.png     each method's score: a dot per seed, mean ± sd, floors and teacher as lines
    comparisons.png  the declared comparisons: paired differences, a dot per seed, the 95 % CI and verdict
    curves.png       every method's training curves overlaid: mean over seeds, band min–max
    geometry.png     alignment against uniformity, mean ± sd over seeds on both axes
"""
from __future__ import annotations

from pathlib import Path

from . import plots
from .benchmark import ROWS, VANILLA, by_method, family as standard_family
from .comparisons import MARGIN, RULES, readme_table
from .groups import Group, mean_std
from .roles import Roles, label

GUIDE = {
    "accuracy": "Each row a method, best first; grey dots are seeds, blue the mean ± sd. Read a gap between "
                "two methods against the spread of their dots, and every method against the dashed lines.",
    "comparisons": f"Each row changes one thing; the bar is the 95 % CI of the mean difference, the shaded band "
                   f"±{MARGIN:g} points. A row is better or worse only when its Holm-corrected p is below 0.05 (its "
                   f"verdict is printed beside it), shows no difference when the whole bar lies inside the band, "
                   f"and is inconclusive otherwise, however far its dots lie from zero.",
    "curves": "Mean over seeds with a band from the lowest to the highest seed; look for methods that are "
              "still rising at the last epoch (undertrained) and for bands that overlap.",
    "geometry": "Lower is better on both axes; bars are ± sd over seeds. A method can be better aligned and "
                "less uniform at once: the trade-off, not one axis, is the point.",
}


def _standard(results: dict) -> bool:
    return results["settings"].get("protocol") == "standard"


def _conditions(results: dict, score: str) -> str:
    s = results["settings"]
    entries = list(results["runs"].values())
    hardware = sorted({e.get("environment", {}).get("gpu") or "CPU ({} threads)".format(
        e.get("environment", {}).get("cpu_threads", "?")) for e in entries})
    seeds = sorted({e["config"]["seed"] for e in entries})
    return (f"*Preset `{s.get('preset', '?')}`, {s['dataset']}, {s['teacher_arch']} → {s['student_arch']}, "
            f"protocol {s.get('protocol', 'lwsupcrd')}, seeds {seeds}, {'; '.join(hardware)}. Score: {score}.*")


def _rows(results: dict):
    """`(score key, score name, [(label, group)], references, the declared family's rows, geometry space)`."""
    if _standard(results):
        groups = by_method(results)
        students = [(ROWS[m], g) for m, g in groups.items() if m != "teacher"]
        refs = {name: groups[m].stats("test_acc")[0] for name, m in (("vanilla student", VANILLA), ("teacher", "teacher"))
                if m in groups and groups[m].stats("test_acc")}
        return "test_acc", "top-1 of the student's own classifier, test split, last epoch", students, refs, \
            standard_family(results), "features"
    r = Roles(results)
    scored = r.scored(lambda g: g.stage in ("baselines", "bank_ablation") or g.first.get("centre"))
    refs = {}
    if r.raw:
        refs["raw-pixel floor"] = r.raw.stats("probe_test_acc")[0]
    floors = results.get("floors", {})
    if floors:
        refs["random-init student floor"] = mean_std([f["random_student"] for f in floors.values()])[0]
    if r.teacher and r.teacher.stats(r.key):
        refs["teacher"] = r.teacher.stats(r.key)[0]
    return r.key, r.measure, [(label(g), g) for g in scored], refs, r.family(), "projection"


def _curves(students: list[tuple[str, Group]], standard: bool) -> dict[str, dict[str, list[list[float]]]]:
    panels = {"test_acc": "test top-1 (%)", "train_acc": "train accuracy (%)", "ce": "cross-entropy"} if standard \
        else {"loss": "training loss (each method's own)"}
    series: dict[str, dict[str, list[list[float]]]] = {}
    for key, title in panels.items():
        for name, g in students:
            runs = [e["curve"][key] for e in g.entries if key in e.get("curve", {})]
            if runs:
                series.setdefault(title, {})[name] = runs
    return series


def overview(results: dict, plots_dir: Path) -> tuple[str, list[Path]]:
    """`(markdown, figures)`: the findings of the comparisons that change one thing, one line each,
    with the conditions once, and the four comparative figures (those the results can draw)."""
    key, score, students, refs, family, space = _rows(results)
    students = [(name, g) for name, g in students if g.stats(key) is not None]
    students.sort(key=lambda item: -item[1].stats(key)[0])
    if not students:
        return "*No student has a score yet: the answer appears once the runs below have finished.*", []
    metric = {"test_acc": "top-1", "probe_test_acc": "probe accuracy"}.get(key, "test accuracy")
    figures, lines = [], []
    figures.append(plots.accuracy_figure([(name, g.by_seed(key)) for name, g in students], refs,
                                         f"{results['settings']['dataset']}: {score}", plots_dir / "accuracy.png"))
    run = [r for r in family if r["diffs"]]
    if run:
        figures.append(plots.forest_figure(run, metric, MARGIN, plots_dir / "comparisons.png"))
    curves = _curves(students, _standard(results))
    if curves:
        figures.append(plots.curves_overlay_figure(curves, plots_dir / "curves.png"))
    points = []
    for name, g in students:
        a, u = g.stats("class_alignment", space), g.stats("uniformity", space)
        if a is not None and u is not None:
            points.append((name, a[:2], u[:2]))
    if points:
        figures.append(plots.geometry_errorbar_figure(points, f"L2-normalised {space}", plots_dir / "geometry.png"))
    best = students[0]
    lines += [_conditions(results, score), "",
              f"Highest mean {metric}: {best[0]}, {best[1].fmt(key)}." + "".join(
                  f" {name.capitalize()}: {value:.2f}." for name, value in refs.items()), ""]
    if run:
        lines += [f"The declared comparisons (Δ {metric}, run − reference). {RULES}", "",
                  readme_table(family, f"Δ {metric} (pp)"), ""]
    kinds = [p.stem for p in figures]
    lines += ["What to look for: " + " ".join(f"**{k}**: {GUIDE[k]}" for k in kinds if k in GUIDE)]
    return "\n".join(lines), figures


def study_figures(results: dict, plots_dir: Path) -> list[Path]:
    """The study-level figures, from the results file alone: accuracy along each sweep, each bank
    run beside its matched control, and alignment against uniformity of every run (projection)."""
    r = Roles(results)
    written = []
    centre = results["settings"].get("sweep_centre", {})
    series = {}
    for key, mode in (("alpha", "weight"), ("alpha", "logit"), ("beta", "weight"), ("temperature", "weight")):
        fixed = {k: v for k, v in centre.items() if k != key}
        pts = sorted((g.config[key], g.stats(r.key)[0]) for g in r.scored(
            lambda g: r.in_sweep(g) and g.config.get("alpha_mode", "weight") == mode
            and all(g.config[k] == v for k, v in fixed.items())))
        if len(pts) >= 2:
            series[f"{key} ({mode})" if key == "alpha" else key] = pts
    if series:
        written.append(plots.sweep_figure(series, plots_dir / "sweeps_accuracy.png"))
    pairs = [(label(g).replace(" (wd 1e-4, cosine)", ""), r.control_of(g).stats(r.key)[0],
              g.stats(r.key)[0]) for g in r.scored(lambda g: g.config.get("bank_negatives") is not None)
             if r.control_of(g) is not None and r.control_of(g).stats(r.key) is not None]
    if pairs:
        written.append(plots.bank_figure(pairs, plots_dir / "bank_ablation.png"))
    points = []
    for g in sorted(r.groups.values(), key=lambda g: (g.stage != "teacher", g.base)):
        if g.stage == "projection":
            continue
        head = r.head if g.stage == "teacher" and r.head is not None else g
        a, u = head.stats("class_alignment"), head.stats("uniformity")
        if a is not None and u is not None:
            trained = head.first.get("analysis", {}).get("projection_head_trained", True)
            points.append((label(g), a[0], u[0], trained))
    if points:
        written.append(plots.geometry_figure(points, "L2-normalised projection; hollow: untrained head",
                                             plots_dir / "alignment_uniformity.png"))
    return written
