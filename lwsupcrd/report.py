"""The results report: the original work's tables, filled only from a comprehensive results file.

    python -m lwsupcrd.report json_results/comprehensive_results_resnet18_cifar100.json

writes the report beside the results file (its name, ending in .md) and prints the same tables
(`python -m lwsupcrd.readme` rebuilds the documentation's generated parts). Each table is a function
of the results file's roles (`roles.Roles`). With several seeds each number is mean ± standard
deviation over seeds (n given); * marks a paired t-test p < 0.05 over the seeds, uncorrected (the
declared comparisons carry the family's Holm correction).

Geometry is reported in two spaces, each labelled: the L2-normalised projection (the space the
contrastive losses act in, and where the original measured alignment and uniformity; the headline
columns) and the L2-normalised backbone features (what the linear probe reads).
"""
from __future__ import annotations

import statistics
import sys
from pathlib import Path

from .code import code_of, versions_section
from .files import read_results, write_text
from .comparisons import HEADER, RULES, table_rows
from .groups import Group, markdown_table, paired_delta
from .protocol import STAGES
from .roles import Roles, label

SPACES = {"projection": "proj.", "features": "backbone"}
STAGE_ORDER = (*STAGES, "floor")


def conditions(r: Roles, groups: list[Group]) -> str:
    s = r.results["settings"]
    env = r.results.get("environment", {})
    entries = [e for g in groups for e in g.entries]

    def machine(e: dict) -> str:
        return e.get("gpu") or f"CPU, {e.get('cpu_threads', '?')} threads ({e.get('platform', '?')})"

    def per_role(key: str) -> str:  # e.g. "teacher 60000, students 10000"
        roles: dict[str, set] = {}
        for e in entries:
            role = {"teacher": "teacher", "projection": "projection head"}.get(e["stage"], "students")
            roles.setdefault(role, set()).add(e["config"].get(key, "?"))
        parts = {role: "/".join(map(str, sorted(v, key=str))) for role, v in roles.items()}
        return parts.popitem()[1] if len(set(parts.values())) == 1 else ", ".join(f"{r} {v}" for r, v in parts.items())

    hardware = sorted({machine(e.get("environment", {})) for e in entries}) or [machine(env)]
    codes = sorted({code_of(e) for e in entries})
    code = codes[0] if len(codes) == 1 else f"{len(codes)} versions (Code versions; † marks the minority's runs)"
    seeds = sorted({e["config"]["seed"] for e in entries})
    return (f"*Preset `{s.get('preset', '?')}`, dataset {s['dataset']}, student {s['student_arch']}, teacher "
            f"{s['teacher_arch']}, projection head {s.get('proj_head', 'mlp')}, train images per seed: "
            f"{per_role('train_size')}; epochs: {per_role('epochs')}; batch: {per_role('batch_size')}; optimiser: "
            f"{per_role('optimizer')}, lr {per_role('lr')}; seeds {seeds}, hardware: {'; '.join(hardware)}, torch "
            f"{env.get('torch', '?')}, "
            f"code {code}. Accuracy: {r.measure}. "
            f"Geometry on the test split: alignment (same-class pairs) and uniformity (t=2) of the "
            f"L2-normalised projection (proj.; the teacher's is its distillation head) and of the "
            f"L2-normalised backbone features (backbone).*")


def geometry(r: Roles, g: Group) -> list[str]:
    """Projection (headline) then backbone: same-class alignment and uniformity. The teacher's
    projection is the head the students were distilled against."""
    head = r.head if g.stage == "teacher" and r.head is not None else g
    return [head.fmt("class_alignment", 4), head.fmt("uniformity", 4),
            g.fmt("class_alignment", 4, "features"), g.fmt("uniformity", 4, "features")]


def floors(r: Roles) -> list[str]:
    floors = r.results.get("floors", {})
    if not floors:
        return []
    rows = [[seed, str(f["train_size"]), f"{f['raw_pixels']:.2f}", f"{f['random_student']:.2f}"]
            for seed, f in sorted(floors.items(), key=lambda kv: int(kv[0]))]
    return ["## Floors", "",
            "What the same linear probe (same split, epochs and seed) reads from raw pixels and from a "
            "randomly initialised student: a trained representation must clear both to have learned "
            "anything the probe can use.", "",
            markdown_table(["Seed", "Train images", "Raw pixels (%)", "Random-init student (%)"], rows), ""]


def main_table(r: Roles) -> list[str]:
    rows = r.scored(lambda g: g.stage in ("teacher", "baselines", "bank_ablation") or g.first.get("centre"))
    rows.sort(key=lambda g: -g.stats(r.key)[0])
    if not rows:
        return []
    probe = r.key != "probe_test_acc"  # the probe beside the headline, labelled
    return ["## Main results", "", conditions(r, rows), "",
            markdown_table(["Method", "Run", "Test acc (%)"] + (["Probe (%)"] if probe else [])
                           + ["Δ vs SupCon", "Δ probe vs raw pixels", "Align. proj. ↓", "Unif. proj. ↓",
                              "Align. backbone ↓", "Unif. backbone ↓"],
                           [[r.mark(g), f"`{g.base}`", g.fmt(r.key)] + ([g.fmt("probe_test_acc")] if probe else [])
                            + [paired_delta(g, r.supcon, r.key),
                               "–" if g.stage == "teacher" else paired_delta(g, r.raw)]
                            + geometry(r, g) for g in rows]), ""]


def sweeps(r: Roles) -> list[str]:
    centre = r.results["settings"].get("sweep_centre", {})
    sweep = [g for g in r.groups.values() if r.in_sweep(g)]
    out = []
    symbols = {"alpha": "α", "beta": "β", "temperature": "τ"}
    for key, mode in (("alpha", "weight"), ("alpha", "logit"), ("beta", "weight"), ("temperature", "weight")):
        fixed = {k: v for k, v in centre.items() if k != key}
        rows = sorted((g for g in sweep if g.config.get("alpha_mode", "weight") == mode
                       and all(g.config[k] == v for k, v in fixed.items())), key=lambda g: g.config[key])
        if len(rows) < 2:
            continue
        fixed_txt = ", ".join(f"{symbols[k]}={v:g}" for k, v in fixed.items())
        reading = f", α reading `{mode}`" if key == "alpha" else ""
        out += [f"## {symbols[key]} sweep ({fixed_txt}{reading}, adaptive β, no bank)", "",
                conditions(r, rows), "",
                markdown_table([symbols[key], "Test acc (%)", "Δ vs SupCon", "Align. proj. ↓", "Unif. proj. ↓",
                        "Align. backbone ↓", "Unif. backbone ↓"],
                       [[f"{g.config[key]:g}", g.fmt(r.key), paired_delta(g, r.supcon, r.key)]
                        + geometry(r, g) for g in rows]), ""]
    return out


def bank(r: Roles) -> list[str]:
    rows = r.scored(lambda g: g.config.get("bank_negatives") is not None)
    if not rows:
        return []
    rows.sort(key=lambda g: -g.stats(r.key)[0])
    return ["## Memory bank against matched controls", "",
            "Each bank run is compared with the run that differs from it in one thing only (its matched "
            "control: same loss, weight decay and schedule, no bank — or, for the teacher-initialised bank, "
            "the randomly initialised one); the difference to SupCon is the second column.", "",
            conditions(r, rows), "",
            markdown_table(["Method", "Matched control", "Test acc (%)", "Δ vs matched control", "Δ vs SupCon",
                    "Train acc (%)", "Gap", "Align. proj. ↓", "Unif. proj. ↓"],
                   [[label(g), f"`{r.control_of(g).base}`" if r.control_of(g) else "–",
                     g.fmt(r.key), paired_delta(g, r.control_of(g), r.key),
                     paired_delta(g, r.supcon, r.key), g.fmt("probe_train_acc"), g.fmt("probe_gap")]
                    + geometry(r, g)[:2] for g in rows]), ""]


def weights(r: Roles) -> list[str]:
    rows = [g for g in r.groups.values() if g.stats("w.q_mean") is not None]
    if not rows:
        return []

    def band(g, key, digits=3):
        mean, lo, hi = (g.stats(f"w.{key}_{s}") for s in ("mean", "p05", "p95"))
        return f"{mean[0]:.{digits}f} [{lo[0]:.{digits}f}, {hi[0]:.{digits}f}]"

    return ["## What the weights do (last epoch)", "",
            "Per run, the last epoch's mean [5th, 95th percentile] over sampled anchors (and anchor-negative "
            "pairs) of the teacher's target probability q, the adaptive β_i, the push weight and the margin "
            "log(w_push / w_pull), and the share of anchors the frozen teacher classifies wrongly; averaged "
            "over seeds. Per-epoch curves: `plots/<run>_weights.png`.", "",
            markdown_table(["Method", "q", "β_i", "w_push", "margin", "Teacher wrong (%)"],
                   [[label(g), band(g, "q"), band(g, "beta_i", 2), band(g, "w_push", 2), band(g, "margin", 2),
                     f"{100 * g.stats('w.teacher_wrong')[0]:.1f}"] for g in sorted(rows, key=lambda g: g.base)]),
            ""]


def comparisons(r: Roles) -> list[str]:
    rows = r.family()
    if not any(r["diffs"] for r in rows):
        return []
    return ["## The declared comparisons", "",
            f"Test accuracy ({r.measure}) of a run minus its reference. {RULES}", "",
            markdown_table(HEADER, table_rows(rows)), ""]


def time(r: Roles) -> list[str]:
    rows, total = [], 0.0
    for g in sorted(r.groups.values(), key=lambda g: (STAGE_ORDER.index(g.stage), g.base)):
        per_run = sorted(sum(e["metrics"].get(k, 0.0) for k in ("train_seconds", "embed_seconds", "probe_seconds"))
                         for e in g.entries)
        median = statistics.median(per_run)
        total += median * len(per_run)
        rows.append([label(g), str(g.config["epochs"]), str(len(per_run)), f"{median:.0f}",
                     f"{per_run[0]:.0f}–{per_run[-1]:.0f}"])
    return ["## Time", "", conditions(r, list(r.groups.values())), "",
            "Seconds per run (training, embedding the splits, fitting the probe) as each run recorded them, "
            "excluding the geometry analysis and figures. A resumed run records only its last process's "
            "part and a run that shared the cores records more, so the medians are the figures to read.", "",
            markdown_table(["Run", "Epochs", "Seeds", "Median s", "Range s"], rows), "",
            f"Median per run × seeds, summed over the study: {total / 60:.0f} min.", ""]


def build_report(results: dict) -> str:
    r = Roles(results)
    out = ["# Results report", "",
           "Generated by `python -m lwsupcrd.report` from the results file alone; every number below was "
           "produced by the code versions listed at the end (their commits), under the conditions stated with "
           "each table. With several seeds: mean ± "
           "standard deviation over seeds; * marks a paired t-test p < 0.05 over the seeds.", ""]
    return "\n".join(out + floors(r) + main_table(r) + comparisons(r) + sweeps(r) + bank(r) + weights(r)
                     + time(r) + versions_section(r.codes, r.main_code))


def write_report(results_path: str | Path) -> Path:
    results_path = Path(results_path)
    results = read_results(results_path)
    path = results_path.with_suffix(".md")
    if results["settings"].get("protocol") == "standard":
        from .benchmark import build_standard_report

        write_text(path, build_standard_report(results) + "\n")
        return path
    write_text(path, build_report(results) + "\n")
    return path


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m lwsupcrd.report <comprehensive_results.json>  (the documents: python -m "
              "lwsupcrd.readme)", file=sys.stderr)
        return 2
    try:
        path = write_report(argv[0])
    except (OSError, ValueError, KeyError) as err:
        print(f"error: cannot build the report from {argv[0]}: {err}", file=sys.stderr)
        return 2
    print(path.read_text())
    print(f"written: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
