"""The standard protocol's table, laid out as CRD's Table 1: a row for the teacher and one per
standard method of the registry (`methods.STANDARD`, in its order); a pair of columns per teacher -> student
pair, ours (top-1 of the student's own classifier on the test split, last epoch; mean ± std over
seeds) beside the published number (theirs, labelled with its source, never mixed with ours).

    python -m lwsupcrd.benchmark json_results/standard_results_resnet32x4-resnet8x4_cifar100.json [more.json ...]
"""
from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

from . import comparisons as family_of
from .groups import Group, groups_of, markdown_table
from .methods import STANDARD
from .pairs import PAIRS, PUBLISHED_TEACHERS, dkd_beta, logit_standardization

ROWS = {"teacher": "Teacher", **{name: m.label for name, m in STANDARD.items()}}
VANILLA = next(name for name, m in STANDARD.items() if not m.needs_teacher)  # the floor of every distilled student


def row_of(config: dict) -> str:
    """The table row of a standard-protocol run: its method's name in the registry, or the teacher."""
    return config["recipe"] if config["method"] == "standard" else "teacher"


def published(method: str, pair: str) -> float | None:
    return PUBLISHED_TEACHERS.get(pair) if method == "teacher" else STANDARD[method].published.get(pair)


def pair_of(results: dict) -> str:
    s = results["settings"]
    return f"{s['teacher_arch']}-{s['student_arch']}"


def by_method(results: dict) -> dict[str, Group]:
    """The results' groups by table row: the registry's method name, or "teacher" (a two-stage method's
    initialisation is not a row: its student is read after the distillation that follows)."""
    return {row_of(g.config): g for g in groups_of(results).values() if g.config["method"] != "initialisation"}


def family(results: dict, key: str = "test_acc", members: tuple = family_of.STANDARD) -> list[dict]:
    """Every member of a declared family of the standard protocol (`comparisons.STANDARD`, or
    `STANDARD_MORE`), paired by seed, with its statistics and verdict; a member whose runs are
    missing says so."""
    groups = by_method(results)

    def scores(method):
        return groups[method].by_seed(key) if method in groups else None

    return family_of.family([(m.what, m.run, m.reference, scores(m.run), scores(m.reference)) for m in members])


def _ours(g: Group | None) -> str:
    return "–" if g is None else g.fmt("test_acc")


def precision_of(results: dict) -> str:
    """The runs' arithmetic, from their configs: bf16 autocast (`amp`; on a GPU, or `--cpu-bf16`) or float32."""
    amp = sorted({bool(e["config"].get("amp", e.get("environment", {}).get("device") == "cuda"))
                  for e in results["runs"].values()})
    return " and ".join("bf16 autocast" if a else "float32" for a in amp)


def conditions(results: dict) -> str:
    """What produced one column: preset, data, epochs, bank, seeds, hardware; departures named."""
    s, env = results["settings"], results.get("environment", {})
    runs = list(results["runs"].values())
    teacher = next((e for e in runs if e["config"]["method"] in ("ce", "published")), None)
    source = ("teacher read from " + Path(teacher["config"]["checkpoint"]).name if teacher and
              teacher["config"]["method"] == "published" else f"teacher trained {s['teacher_epochs']} epochs")
    seeds = sorted({e["config"]["seed"] for e in runs})
    device = sorted({e.get("environment", {}).get("device", "?") for e in runs})
    train = f"{s['train_subset']}-image subset" if s.get("train_subset") else "full training split"
    if not (teacher and teacher["config"]["method"] == "published"):
        teacher_on = s.get("teacher_train_subset")
        source += f" on the {f'{teacher_on}-image subset' if teacher_on else 'full training split'}, shared by every seed"
    return (f"{pair_of(results)}: preset {s['preset']}, {s['dataset']} ({train}), students {s['student_epochs']} "
            f"epochs, batch {s['batch_size']}, SGD lr {s['lr']:g} x{s['lr_decay']:g} at {list(s['lr_milestones'])}, "
            f"wd {s['weight_decay']:g}; {source}; {s['bank_negatives']} negatives per anchor (CRD's NCE) or per step "
            f"(the bank of the InfoNCE and LW-SupCRD rows); seeds {seeds}; device {', '.join(device)}, "
            f"{precision_of(results)}; "
            f"torch {env.get('torch', '?')}")


def standard_table(all_results: list[dict], conditions_of: bool = True) -> str:
    """CRD's Table 1 layout for these results files, one pair of columns per file."""
    header = ["Method"]
    columns = []
    for results in all_results:
        pair, dataset = pair_of(results), results["settings"].get("dataset", "cifar100")
        t, s = pair.split("-")
        cifar = dataset == "cifar100"  # the published numbers are CIFAR-100's: no column beside other data
        header += [f"{t} → {s}: ours"] + (["published"] if cifar else []) if cifar else [f"{t} → {s} ({dataset}): ours"]
        columns.append((by_method(results), pair, cifar))
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for method, row in ROWS.items():
        cells = [row]
        for groups, pair, cifar in columns:
            theirs = published(method, pair)
            cells += [_ours(groups.get(method))] + (["–" if theirs is None else f"{theirs:.2f}"] if cifar else [])
        lines.append("| " + " | ".join(cells) + " |")
    notes = [f"- {conditions(r)}" for r in all_results] if conditions_of else []
    sources = sorted({m.source for m in STANDARD.values() if m.published})
    departures = [f"- {m.label}: {m.ours}." for m in STANDARD.values() if m.ours]
    betas = []
    for groups, pair, _ in columns:
        rule, why = dkd_beta(pair)
        ran = next((g.config["dkd_beta"] for g in groups.values() if "dkd_beta" in g.config), None)
        betas.append(f"{pair}: β {rule:g} ({why})" if ran in (None, rule) else
                     f"{pair}: these runs used β {ran:g}, before β was set per pair (today's rule: {rule:g}, {why})")
    departures.append("- DKD's β per pair — " + "; ".join(betas) + ".")
    standardized = []
    for _, pair, _ in columns:
        (t, w), why = logit_standardization(pair)
        (t2, w2, beta), why2 = logit_standardization(pair, dkd=True)
        standardized.append(f"{pair}: KD at T {t:g}, weight {w:g} ({why}); DKD at T {t2:g}, α {w2:g}, "
                            f"β {w2:g} × {beta:g} ({why2})")
    departures.append("- Logit standardization's settings per pair — " + "; ".join(standardized) + ".")
    return "\n".join(lines + [""] + notes + [
        "- ours: top-1 (%) of the student's own classifier on the test split at the last epoch, mean ± std "
        "over seeds (n given when > 1); published: theirs, read from " + "; ".join(sources) + " (teachers and "
        "students from the former); – where no entry was published or we have no run.",
        "- Departures from the references, for every row: bf16 autocast on a GPU (float32 on a CPU); one "
        "teacher per study and the seeds over students; DKD's warm-up is 20/240 of the student epochs."]
        + departures)


def published_table(pairs: tuple[str, ...]) -> str:
    """The published top-1 (%) of every row on these pairs, theirs only (docs/standard-benchmark.md's
    Tables 1 and 2); – where no source has a number."""
    rows = [[label] + ["–" if (n := published(method, pair)) is None else f"{n:.2f}" for pair in pairs]
            for method, label in ROWS.items()]
    return markdown_table(["Method"] + [pair.replace("-", " → ") for pair in pairs], rows)


def comparisons(results: dict, key: str = "test_acc", members: tuple = family_of.STANDARD) -> str:
    """A declared family's table (`comparisons.HEADER`) with each seed's difference beside it."""
    rows = family(results, key, members)
    text = family_of.table_rows(rows)
    for row, r in zip(text, rows):
        row.insert(3, ", ".join(f"{d:+.2f}" for d in r["diffs"].values()) if r["diffs"] else "–")
    header = family_of.HEADER[:3] + ["Δ per seed"] + family_of.HEADER[3:]
    return markdown_table(header, text)


def details(results: dict) -> str:
    """Per method: last-epoch top-1 (the score), the best scored epoch's (labelled), and for the LW-SupCRD
    family the teacher's probability of the true class and its wrong share on the students' images."""
    rows = []
    groups = by_method(results)
    for method, label in ROWS.items():
        if method in groups:
            g = groups[method]
            rows.append([label, g.fmt("test_acc"), g.fmt("best_test_acc"), g.fmt("best_epoch", 1),
                         g.fmt("w.q_mean", 3), g.fmt("w.teacher_wrong", 3)])
    return markdown_table(["Method", "Top-1, last epoch (%)", "Top-1, best scored epoch (%)", "Best epoch",
                           "Teacher q (true class)", "Teacher wrong share"], rows)


def time_line(results: dict) -> str:
    """The training seconds the runs recorded: the teacher's, the students' median and range."""
    entries = list(results["runs"].values())
    teacher = [e["metrics"].get("train_seconds", 0.0) for e in entries if e["stage"] == "teacher"]
    students = sorted(e["metrics"].get("train_seconds", 0.0) for e in entries if e["stage"] == "distillation")
    init = [e["metrics"].get("train_seconds", 0.0) for e in entries if e["stage"] == "initialisation"]
    if not students:
        return ""
    return (f"Training time as the runs recorded it (scoring the test split during training included): teacher "
            f"{sum(teacher):.0f} s; {len(students)} students, median {statistics.median(students):.0f} s "
            f"(range {students[0]:.0f}–{students[-1]:.0f} s)"
            + (f", after {len(init)} initialisations of {sum(init):.0f} s in all" if init else "")
            + ". A run that shared the cores or was paused records that time too, so the median is the figure to "
              "read. The study's wall clock, and where it ran, is stated once, in bench/RESULTS.md.")


def _more(results: dict) -> list[str]:
    """The newer methods' family (`comparisons.STANDARD_MORE`), where the results hold any of its runs."""
    more = family_of.STANDARD_MORE
    if not ({m.run for m in more} - {m.reference for m in more}) & set(by_method(results)):
        return []
    return ["## The newer methods' comparisons", "", "A family of its own, Holm within it. " + family_of.RULES, "",
            comparisons(results, members=family_of.STANDARD_MORE), ""]


def build_standard_report(results: dict) -> str:
    return "\n".join(["# Standard protocol: CRD's benchmark", "",
                      "Generated by `python -m lwsupcrd.report` from the results file alone.", "",
                      standard_table([results]), "", "## The declared comparisons", "",
                      "Top-1 of a run minus its reference (last epoch). " + family_of.RULES, "",
                      comparisons(results), "", *_more(results), "## Each method", "",
                      "The score is the last epoch's; the best epoch's is shown beside it, labelled, because some "
                      "papers report it (it selects on the test split).", "", details(results), "", "## Time", "",
                      time_line(results), ""])


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv:
        print("usage: python -m lwsupcrd.benchmark <standard_results.json> [...]", file=sys.stderr)
        return 2
    try:
        print(standard_table([json.loads(Path(p).read_text()) for p in argv]))
    except (OSError, json.JSONDecodeError, KeyError) as err:
        print(f"error: cannot build the table: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
