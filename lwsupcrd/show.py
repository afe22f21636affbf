"""What the notebook shows after each stage, from the results file and the figures on disk: the
stage's runs as a table and its figures as one grid per kind. In Jupyter they are displayed
inline; run as a script, the table is printed and the grids are written to `plots/`."""
from __future__ import annotations

from pathlib import Path

from .groups import markdown_table
from .report import Report, label

# per-run figures shown as grids (each run's alignment figure and hypersphere page stay in plots/)
FIGURE_KINDS = {"tsne": "t-SNE (projection)", "curves": "training curves", "weights": "LW-SupCRD weights"}


def in_jupyter() -> bool:
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and shell.__class__.__name__ == "ZMQInteractiveShell"


def stage_table(results: dict, names: list[str]) -> str:
    """The runs' probe accuracy, train accuracy, gap, difference to SupCon and geometry (projection
    first, then backbone), one row per run, in the markdown of the report."""
    r = Report(results)
    rows = []
    for name in names:
        entry = results["runs"].get(name)
        if entry is None:
            continue
        g = r.groups[entry.get("base") or name]
        m = entry.get("metrics", {})
        acc = m.get("probe_test_acc")
        supcon = r.supcon.by_seed("probe_test_acc").get(entry["config"]["seed"]) if r.supcon else None
        delta = f"{acc - supcon:+.2f}" if acc is not None and supcon is not None else "–"
        geometry = [_fmt(value) for value in _geometry(entry, r)]
        rows.append([label(g), f"`{name}`"] + [_fmt(m.get(k), 2) for k in ("probe_test_acc", "probe_train_acc",
                                                                           "probe_gap")] + [delta] + geometry)
    return markdown_table(["Method", "Run", "Test acc (%)", "Train acc (%)", "Gap", "Δ vs SupCon", "Align. proj. ↓",
                   "Unif. proj. ↓", "Align. backbone ↓", "Unif. backbone ↓"], rows)


def describe(runs: list) -> str:
    """What these runs are, in the values this configuration actually has (not the paper's)."""
    if not runs:
        return "*(no run of this stage was selected)*"
    c = runs[0].cfg
    text = (f"*{len(runs)} run(s): {c['arch']}, {c['epochs']} epochs, {c['optimizer']} lr {c['lr']:g}, weight decay "
            f"{c['weight_decay']:g}, {c['schedule']} schedule, batch {c['batch_size']}, {c['proj_head']} projection "
            f"head, seed {c['seed']}")
    if any(r.cfg["method"] == "standard" for r in runs):
        from .benchmark import ROWS, row_of

        text += ("; student loss gamma CE + a KD + b distill (gamma, a, b): " + ", ".join(
            f"{ROWS[row_of(r.cfg)]} ({r.cfg['gamma']:g}, {r.cfg['kd_weight']:g}, {r.cfg['distill_weight']:g})"
            for r in runs if r.cfg["method"] == "standard"))
    lw = [r.cfg for r in runs if r.cfg["method"] == "lwsupcrd" and r.cfg.get("logit_weighting", True)]
    if lw:
        text += "; LW-SupCRD (α, β, τ, α reading): " + ", ".join(
            f"({x['alpha']:g}, {x['beta']:g}, {x['temperature']:g}, {x['alpha_mode']})" for x in lw)
    banks = sorted({(r.cfg["bank_negatives"], r.cfg["bank_momentum"]) for r in runs if r.cfg.get("bank_negatives")})
    if banks:
        text += "; bank: " + ", ".join(f"{k} negatives, momentum {m:g}" for k, m in banks)
    return text + ".*"


def _geometry(entry: dict, r: Report) -> list:
    head = entry
    if entry["stage"] == "teacher" and r.head is not None:  # the head the students were distilled against
        head = next((e for e in r.head.entries if e["config"]["seed"] == entry["config"]["seed"]), entry)
    proj, feats = head.get("analysis", {}).get("projection", {}), entry.get("analysis", {}).get("features", {})
    return [proj.get("class_alignment"), proj.get("uniformity"), feats.get("class_alignment"), feats.get("uniformity")]


def _fmt(value, digits: int = 4) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def show_stage(study, stage: str) -> list[Path]:
    """Display (Jupyter) or print (script) the stage's table, and write its figure grids."""
    from . import plots

    if not any(r.stage == stage for r in study.runs.values()):  # a stage of the other protocol
        return []
    names = [n for n in study.order() if study.runs[n].stage == stage and n in study.results["runs"]]
    if study.standard:
        from .benchmark import standard_table

        present(describe([study.runs[n] for n in names]) + "\n\n" + standard_table([study.results]), [])
        return []
    table = describe([study.runs[n] for n in names]) + "\n\n" + stage_table(study.results, names)
    grids = []
    for kind, title in FIGURE_KINDS.items():
        pngs = [study.out / study.results["runs"][n].get("analysis", {}).get("figures", {}).get(kind, "")
                for n in names]
        pngs = [p for p in pngs if p.suffix == ".png" and p.exists()]
        if pngs:
            path = study.study_plots_dir / f"stage_{stage}_{kind}.png"
            grids.append(plots.image_grid(pngs, f"{stage}: {title}", path))
    present(table, grids)
    return grids


def present(table: str, images: list[Path]) -> None:
    if not in_jupyter():
        print(table)
        for path in images:
            print(f"figure: {path}")
        return
    from IPython.display import Image, Markdown, display

    display(Markdown(table))
    for path in images:
        display(Image(filename=str(path)))


def show_probe(study) -> None:
    """Every run's linear-probe accuracy beside SupCon's, and the floors (the original protocol)."""
    if study.standard:
        return
    r = Report(study.results)
    supcon = r.supcon.by_seed("probe_test_acc") if r.supcon else {}  # each run against its own seed's SupCon
    print(f"{'run':64s} {'test':>7s} {'train':>7s} {'gap':>7s} {'vs SupCon':>9s}")
    for name in study.order():
        entry = study.results["runs"].get(name, {})
        m, seed = entry.get("metrics", {}), entry.get("config", {}).get("seed")
        if "probe_test_acc" in m:
            delta = f"{m['probe_test_acc'] - supcon[seed]:+.2f}" if seed in supcon else ""
            print(f"{name:64s} {m['probe_test_acc']:7.2f} {m['probe_train_acc']:7.2f} {m['probe_gap']:7.2f} {delta:>9s}")
    for seed, f in study.results.get("floors", {}).items():
        print(f"floors (seed {seed}, {f['train_size']} images): raw pixels {f['raw_pixels']:.2f}, "
              f"random-init student {f['random_student']:.2f}")
    print(f"results: {study.results_path}")
