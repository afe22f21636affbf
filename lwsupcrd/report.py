"""The results report: the original work's tables, filled only from a comprehensive results file.

    python -m lwsupcrd.report json_results/comprehensive_results_resnet18_cifar100.json

writes the report beside the results file (its name, ending in .md) and prints the same tables
(`python -m lwsupcrd.readme` rebuilds the documentation's generated parts). With several seeds each number is mean ± standard deviation over seeds (n given), and
a difference is marked significant (*) only when a paired t-test over the seeds gives p < 0.05.

Geometry is reported in two spaces, each labelled: the L2-normalised projection (the space the
contrastive losses act in, and where the original measured alignment and uniformity; the headline
columns) and the L2-normalised backbone features (what the linear probe reads).
"""
from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

from .code import code_of, versions_section
from .files import read_results, write_text
from .comparisons import HEADER, ORIGINAL, RULES, family, table_rows
from .groups import Group, base_name, groups_of, headline, markdown_table, paired_delta
from .losses import onehot_teacher_beta
from .protocol import STAGES, SWEEP_CENTRE

SPACES = {"projection": "proj.", "features": "backbone"}
STAGE_ORDER = (*STAGES, "floor")


def onehot_control(c: dict) -> bool:
    """Whether a run is unweighted SupCRD at LW-SupCRD's weights for a one-hot teacher."""
    return (c.get("method") == "lwsupcrd" and not c.get("logit_weighting", True) and c["alpha"] == SWEEP_CENTRE["alpha"]
            and abs(c["beta"] - onehot_teacher_beta(SWEEP_CENTRE["beta"])) < 1e-9)


def label(g: Group) -> str:
    c = g.config
    bank = f" + bank {c['bank_negatives']}" if c.get("bank_negatives") else ""
    if c.get("bank_init") == "teacher":
        bank += " (teacher-initialised)"
    ablation = " (wd 1e-4, cosine)" if g.stage == "bank_ablation" and c.get("schedule") == "cosine" else ""
    if g.stage == "teacher":
        return f"Teacher ({c['arch']})"
    if g.stage == "projection":
        return f"Teacher's projection head ({c['arch']}, {c.get('proj_head', 'mlp')})"
    if onehot_control(c):
        return (f"SupCRD, LW-SupCRD's weights for a one-hot teacher (α={c['alpha']:g}, β={c['beta']:.3g}, "
                f"τ={c['temperature']:g}){bank}{ablation}")
    if c["method"] == "lwsupcrd" and not c.get("logit_weighting", True):
        return f"SupCRD, unweighted (α={c['alpha']:g}, β={c['beta']:g}, τ={c['temperature']:g}){bank}{ablation}"
    if c["method"] == "lwsupcrd":
        mode = ", α on the logit" if c.get("alpha_mode") == "logit" else ""
        form = {"per_positive": ", per-positive form (ours)", "anchor": ""}.get(c.get("lw_form"), "")
        if c.get("lw_form") == "anchor" and not c.get("own_key", True):
            form = ", own key not a positive (the port)"
        return f"LW-SupCRD (α={c['alpha']:g}, β={c['beta']:g}, τ={c['temperature']:g}{mode}){form}{bank}{ablation}"
    if c["method"] == "crd" and c.get("crd_form") == "instance":
        return f"CRD, the original's instance form{bank}{ablation}"
    if c["method"] == "crd":  # ours: in-batch InfoNCE, not the published NCE with two memories
        return f"CRD, InfoNCE form (ours{', class-aware' if c.get('class_aware') else ''}){bank}{ablation}"
    return {"supcon": "SupCon", "undistilled": "Undistilled student (CE; projection head untrained)"}.get(
        c["method"], g.base)


class Report:
    """The groups of a results file, and the roles the protocol gave them."""

    def __init__(self, results: dict):
        self.results = results
        self.groups = groups_of(results)
        self.names = {name: base_name(name, e) for name, e in results["runs"].items()}
        self.supcon = self.find(lambda g: g.stage == "baselines" and g.config["method"] == "supcon")
        self.teacher = self.find(lambda g: g.stage == "teacher")
        self.head = self.find(lambda g: g.stage == "projection")
        self.codes = {name: code_of(e) for name, e in results["runs"].items()}
        self.main_code = max(Counter(self.codes.values()).items(), key=lambda kv: (kv[1], kv[0]), default=("?",))[0]
        floors = results.get("floors", {})
        self.raw = Group("raw pixels", [{"stage": "floor", "config": {"seed": int(k)}, "metrics": {
            "probe_test_acc": f["raw_pixels"]}} for k, f in floors.items()]) if floors else None
        self.key, self.measure = headline(results["settings"])

    def method(self, method: str, weighted: bool = True, mode: str = "weight", bank: bool = False,
               unit: bool = True, class_aware: bool = False, form: str | None = None) -> Group | None:
        """The scored run of this method at the sweeps' centre, outside the bank stage unless `bank`
        (unweighted SupCRD: the alpha = beta = 1 control if `unit`, else the one-hot teacher's), in the
        loss form `form` (default: the preset's)."""
        centre = self.results["settings"].get("sweep_centre", {})
        form = form or self.results["settings"].get("lw_form")

        def match(g: Group) -> bool:
            c = g.config
            if c.get("method") != method or bool(c.get("bank_negatives")) != bank or c.get("bank_init") == "teacher":
                return False
            if c.get("class_aware", False) != class_aware:
                return False
            if g.stage not in ("baselines", "lwsupcrd") + (("bank_ablation",) if bank else ()):
                return False
            if method != "lwsupcrd":
                return True
            if not weighted:
                return not c.get("logit_weighting", True) and onehot_control(c) != unit
            return c.get("logit_weighting", True) and c.get("alpha_mode", "weight") == mode and all(
                c.get(k) == v for k, v in centre.items()) and (mode == "logit" or c.get("lw_form") == form)
        found = self.scored(match)
        return found[0] if found else None

    def mark(self, g: Group) -> str:
        """The group's label, with † if any of its runs was computed by other code than most runs."""
        other = any(self.codes.get(n) != self.main_code for n, b in self.names.items() if b == g.base)
        return label(g) + (" †" if other else "")

    def find(self, pred) -> Group | None:
        return next((g for g in self.groups.values() if pred(g)), None)

    def control_of(self, g: Group) -> Group | None:
        return self.groups.get(self.names.get(g.control, "")) if g.control else None

    def scored(self, pred) -> list[Group]:
        return [g for g in self.groups.values() if pred(g) and g.stats(self.key) is not None]

    def geometry(self, g: Group) -> list[str]:
        """Projection (headline) then backbone: same-class alignment and uniformity. The teacher's
        projection is the head the students were distilled against."""
        head = self.head if g.stage == "teacher" and self.head is not None else g
        return [head.fmt("class_alignment", 4), head.fmt("uniformity", 4),
                g.fmt("class_alignment", 4, "features"), g.fmt("uniformity", 4, "features")]

    def conditions(self, groups: list[Group]) -> str:
        s = self.results["settings"]
        env = self.results.get("environment", {})
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
                f"code {code}. Accuracy: {self.measure}. "
                f"Geometry on the test split: alignment (same-class pairs) and uniformity (t=2) of the "
                f"L2-normalised projection (proj.; the teacher's is its distillation head) and of the "
                f"L2-normalised backbone features (backbone).*")

    def floors(self) -> list[str]:
        floors = self.results.get("floors", {})
        if not floors:
            return []
        rows = [[seed, str(f["train_size"]), f"{f['raw_pixels']:.2f}", f"{f['random_student']:.2f}"]
                for seed, f in sorted(floors.items(), key=lambda kv: int(kv[0]))]
        return ["## Floors", "",
                "What the same linear probe (same split, epochs and seed) reads from raw pixels and from a "
                "randomly initialised student: a trained representation must clear both to have learned "
                "anything the probe can use.", "",
                markdown_table(["Seed", "Train images", "Raw pixels (%)", "Random-init student (%)"], rows), ""]

    def main_table(self) -> list[str]:
        rows = self.scored(lambda g: g.stage in ("teacher", "baselines", "bank_ablation") or g.first.get("centre"))
        rows.sort(key=lambda g: -g.stats(self.key)[0])
        if not rows:
            return []
        probe = self.key != "probe_test_acc"  # the probe beside the headline, labelled
        return ["## Main results", "", self.conditions(rows), "",
                markdown_table(["Method", "Run", "Test acc (%)"] + (["Probe (%)"] if probe else [])
                               + ["Δ vs SupCon", "Δ probe vs raw pixels", "Align. proj. ↓", "Unif. proj. ↓",
                                  "Align. backbone ↓", "Unif. backbone ↓"],
                               [[self.mark(g), f"`{g.base}`", g.fmt(self.key)] + ([g.fmt("probe_test_acc")] if probe else [])
                                + [paired_delta(g, self.supcon, self.key),
                                   "–" if g.stage == "teacher" else paired_delta(g, self.raw)]
                                + self.geometry(g) for g in rows]), ""]

    def sweeps(self) -> list[str]:
        centre = self.results["settings"].get("sweep_centre", {})
        sweep = [g for g in self.groups.values() if g.stage == "lwsupcrd"]
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
                    self.conditions(rows), "",
                    markdown_table([symbols[key], "Test acc (%)", "Δ vs SupCon", "Align. proj. ↓", "Unif. proj. ↓",
                            "Align. backbone ↓", "Unif. backbone ↓"],
                           [[f"{g.config[key]:g}", g.fmt(self.key), paired_delta(g, self.supcon, self.key)]
                            + self.geometry(g) for g in rows]), ""]
        return out

    def bank(self) -> list[str]:
        rows = self.scored(lambda g: g.config.get("bank_negatives") is not None)
        if not rows:
            return []
        rows.sort(key=lambda g: -g.stats(self.key)[0])
        return ["## Memory bank against matched controls", "",
                "Each bank run is compared with the run that differs from it in one thing only (its matched "
                "control: same loss, weight decay and schedule, no bank — or, for the teacher-initialised bank, "
                "the randomly initialised one); the difference to SupCon is the second column.", "",
                self.conditions(rows), "",
                markdown_table(["Method", "Matched control", "Test acc (%)", "Δ vs matched control", "Δ vs SupCon",
                        "Train acc (%)", "Gap", "Align. proj. ↓", "Unif. proj. ↓"],
                       [[label(g), f"`{self.control_of(g).base}`" if self.control_of(g) else "–",
                         g.fmt(self.key), paired_delta(g, self.control_of(g), self.key),
                         paired_delta(g, self.supcon, self.key), g.fmt("probe_train_acc"), g.fmt("probe_gap")]
                        + self.geometry(g)[:2] for g in rows]), ""]

    def weights(self) -> list[str]:
        rows = [g for g in self.groups.values() if g.stats("w.q_mean") is not None]
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


    def role(self, name: str) -> Group | None:
        """The group that plays `name` in the declared family (`comparisons.ORIGINAL`), if it was run."""
        finders = {
            "lwsupcrd": lambda: self.method("lwsupcrd"),
            "unweighted": lambda: self.method("lwsupcrd", weighted=False),
            "onehot": lambda: self.method("lwsupcrd", weighted=False, unit=False),
            "perpositive": lambda: self.method("lwsupcrd", form="per_positive"),
            "logit": lambda: self.method("lwsupcrd", mode="logit"),
            "supcon": lambda: self.supcon,
            "crd": lambda: self.method("crd"),
            "crd_classaware": lambda: self.method("crd", class_aware=True),
            "undistilled": lambda: self.method("undistilled"),
        }
        found = finders[name]()
        return found if found is not None and found.stats(self.key) is not None else None

    def family(self) -> list[dict]:
        """Every member of the declared family, each bank run against its matched control."""
        pairs = []
        for m in ORIGINAL:
            if m.run == "bank":
                banks = self.scored(lambda g: g.config.get("bank_negatives") is not None)
                pairs += [(f"the memory bank ({label(g)})", g.base, self.control_of(g).base if self.control_of(g)
                           else "–", g.by_seed(self.key), self.control_of(g).by_seed(self.key)
                           if self.control_of(g) else None) for g in banks] or [(m.what, m.run, m.reference, None, None)]
                continue
            a, b = self.role(m.run), self.role(m.reference)
            pairs.append((m.what, a.base if a else m.run, b.base if b else m.reference,
                          a.by_seed(self.key) if a else None, b.by_seed(self.key) if b else None))
        return family(pairs)

    def comparisons(self) -> list[str]:
        rows = self.family()
        if not any(r["diffs"] for r in rows):
            return []
        return ["## The declared comparisons", "",
                f"Test accuracy ({self.measure}) of a run minus its reference. {RULES}", "",
                markdown_table(HEADER, table_rows(rows)), ""]

    def time(self) -> list[str]:
        rows, total = [], 0.0
        for g in sorted(self.groups.values(), key=lambda g: (STAGE_ORDER.index(g.stage), g.base)):
            per_run = sorted(sum(e["metrics"].get(k, 0.0) for k in ("train_seconds", "embed_seconds", "probe_seconds"))
                             for e in g.entries)
            median = per_run[len(per_run) // 2]
            total += median * len(per_run)
            rows.append([label(g), str(g.config["epochs"]), str(len(per_run)), f"{median:.0f}",
                         f"{per_run[0]:.0f}–{per_run[-1]:.0f}"])
        return ["## Time", "", self.conditions(list(self.groups.values())), "",
                "Seconds per run (training, embedding the splits, fitting the probe) as each run recorded them, "
                "excluding the geometry analysis and figures. A resumed run records only its last process's "
                "part and a run that shared the cores records more, so the medians are the figures to read.", "",
                markdown_table(["Run", "Epochs", "Seeds", "Median s", "Range s"], rows), "",
                f"Median per run × seeds, summed over the study: {total / 60:.0f} min.", ""]


def build_report(results: dict) -> str:
    r = Report(results)
    out = ["# Results report", "",
           "Generated by `python -m lwsupcrd.report` from the results file alone; every number below was "
           "produced by the code versions listed at the end (their commits), under the conditions stated with "
           "each table. With several seeds: mean ± "
           "standard deviation over seeds; * marks a paired t-test p < 0.05 over the seeds.", ""]
    return "\n".join(out + r.floors() + r.main_table() + r.comparisons() + r.sweeps() + r.bank() + r.weights()
                     + r.time() + versions_section(r.codes, r.main_code))


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
