"""What the notebook shows after each stage, from the results file: the stage's experiments as
one table averaged over seeds (mean ± sd, n), the per-seed rows and the links to every run's own
figures (t-SNE, curves, weights, hypersphere page in `plots/`) folded beneath it. In Jupyter they
are displayed as markdown; run as a script, printed. No per-run figure is tiled into the notebook."""
from __future__ import annotations

import os
from pathlib import Path

from .groups import markdown_table, paired_delta
from .report import geometry
from .roles import Roles, label

FIGURE_NAMES = {"tsne": "t-SNE", "curves": "curves", "weights": "weights", "hypersphere": "hypersphere page",
                "alignment": "alignment"}


def in_jupyter() -> bool:
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and shell.__class__.__name__ == "ZMQInteractiveShell"


def stage_table(results: dict, names: list[str]) -> str:
    """One row per experiment of these runs: probe test and train accuracy, gap, the difference to
    SupCon paired by seed, and geometry (projection first, then backbone), each mean ± sd (n)."""
    r = Roles(results)
    bases = list(dict.fromkeys(results["runs"][n].get("base") or n for n in names if n in results["runs"]))
    rows = []
    for base in bases:
        g = r.groups[base]
        delta = paired_delta(g, r.supcon, r.key) if r.supcon is not None and g is not r.supcon else "–"
        rows.append([label(g), f"`{base}`", str(len(g.entries))] + [g.fmt(k) for k in (
            r.key, "probe_test_acc", "probe_train_acc", "probe_gap")] + [delta] + geometry(r, g))
    head = "Test acc (%)" if r.key == "probe_test_acc" else "Online classifier (%)"
    return markdown_table(["Method", "Experiment", "Seeds", head, "Probe test (%)", "Probe train (%)", "Probe gap",
                           "Δ vs SupCon", "Align. proj. ↓", "Unif. proj. ↓", "Align. backbone ↓", "Unif. backbone ↓"],
                          rows)


def per_seed(results: dict, names: list[str], out: Path, keys: tuple[str, ...]) -> str:
    """The runs one by one (a row per seed) with links to their figures, folded under a summary."""
    rows = []
    for name in names:
        entry = results["runs"].get(name)
        if entry is None:
            continue
        m = entry.get("metrics", {})
        links = " · ".join(f"[{FIGURE_NAMES.get(kind, kind)}]({_link(out / path)})"
                           for kind, path in entry.get("analysis", {}).get("figures", {}).items())
        rows.append([f"`{name}`", str(entry["config"]["seed"])] + [_fmt(m.get(k), 2) for k in keys] + [links or "–"])
    table = markdown_table(["Run", "Seed", *keys, "Figures"], rows)
    return f"<details><summary>Per seed: {len(rows)} runs and their figures</summary>\n\n{table}\n\n</details>"


def _link(path: Path) -> str:
    try:
        return Path(os.path.relpath(path)).as_posix()
    except ValueError:  # another drive
        return path.as_posix()


def describe(runs: list) -> str:
    """What these runs are, in the values this configuration actually has (not the paper's)."""
    if not runs:
        return "*(no run of this stage was selected)*"
    c = runs[0].cfg
    if c["method"] == "published":
        return f"*{len(runs)} run(s): {c['arch']} read from `{Path(c['checkpoint']).name}`, not trained*"
    head = c["proj_head"] + (f" {c['proj_hidden']}" if c.get("proj_hidden") else "")
    text = (f"*{len(runs)} run(s): {c['arch']}, {c['epochs']} epochs, {c['optimizer']} lr {c['lr']:g}, weight decay "
            f"{c['weight_decay']:g}, {c['schedule']} schedule, batch {c['batch_size']}, {head} projection "
            f"head, seeds {sorted({r.cfg['seed'] for r in runs})}")
    if any(r.cfg["method"] == "standard" for r in runs):
        from .benchmark import ROWS, row_of

        text += ("; student loss gamma CE + a KD + b distill (gamma, a, b): " + ", ".join(dict.fromkeys(
            f"{ROWS[row_of(r.cfg)]} ({r.cfg['gamma']:g}, {r.cfg['kd_weight']:g}, {r.cfg['distill_weight']:g})"
            for r in runs if r.cfg["method"] == "standard")))  # once per method, not per seed
    lw = [r.cfg for r in runs if r.cfg["method"] == "lwsupcrd" and r.cfg.get("logit_weighting", True)]
    if lw:
        text += "; LW-SupCRD (α, β, τ, α reading, loss form): " + ", ".join(dict.fromkeys(
            f"({x['alpha']:g}, {x['beta']:g}, {x['temperature']:g}, {x['alpha_mode']}, {x.get('lw_form', 'per_positive')})"
            for x in lw))
    banks = sorted({(r.cfg["bank_negatives"], r.cfg["bank_momentum"]) for r in runs if r.cfg.get("bank_negatives")})
    if banks:
        text += "; bank: " + ", ".join(f"{k} negatives, momentum {m:g}" for k, m in banks)
    return text + ".*"


def _fmt(value, digits: int = 4) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def show_stage(study, stage: str) -> None:
    """Display (Jupyter) or print (script) the stage's table averaged over seeds, the per-seed rows
    and the links to each run's figures."""
    names = [n for n in study.order() if study.runs[n].stage == stage and n in study.results["runs"]]
    if not names:
        present(f"*No run of this stage in this configuration (protocol {study.cfg.protocol}).*", [])
        return
    if study.standard:  # each method's last and best epoch, mean ± sd (the full table is in the report)
        from .benchmark import details

        table = details({**study.results, "runs": {n: study.results["runs"][n] for n in names}})
        keys = ("test_acc", "best_test_acc")
    else:
        table = stage_table(study.results, names)
        keys = tuple(dict.fromkeys((Roles(study.results).key, "probe_test_acc", "probe_train_acc")))
    present("\n\n".join([describe([study.runs[n] for n in names]), table,
                          per_seed(study.results, names, study.out, keys)]), [])


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
    """Every run's headline accuracy (and its linear probe) beside SupCon's, and the floors (the
    original protocol)."""
    if study.standard:
        return
    r = Roles(study.results)
    supcon = r.supcon.by_seed(r.key) if r.supcon else {}  # each run against its own seed's SupCon
    print(f"accuracy: {r.measure}")
    print(f"{'run':64s} {'test':>7s} {'probe':>7s} {'p.train':>7s} {'vs SupCon':>9s}")
    for name in study.order():
        entry = study.results["runs"].get(name, {})
        m, seed = entry.get("metrics", {}), entry.get("config", {}).get("seed")
        if r.key in m:
            delta = f"{m[r.key] - supcon[seed]:+.2f}" if seed in supcon else ""
            print(f"{name:64s} {m[r.key]:7.2f} {m['probe_test_acc']:7.2f} {m['probe_train_acc']:7.2f} {delta:>9s}")
    for seed, f in study.results.get("floors", {}).items():
        print(f"floors (seed {seed}, {f['train_size']} images): raw pixels {f['raw_pixels']:.2f}, "
              f"random-init student {f['random_student']:.2f}")
    print(f"results: {study.results_path}")
