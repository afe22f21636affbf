"""The groups of a results file of the original protocol and the roles the protocol gave them
(SupCon, the teacher, each control, each member of the declared family): what the tables, figures
and documents ask of a results file, looked up once."""
from __future__ import annotations

from collections import Counter

from .code import code_of
from .comparisons import ORIGINAL, family
from .groups import Group, base_name, groups_of, headline
from .losses import onehot_teacher_beta
from .protocol import SWEEP_CENTRE


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


class Roles:
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

    def in_sweep(self, g: Group) -> bool:
        """Whether `g` is a point of the LW-SupCRD sweeps: its stage's runs in the preset's loss form (the
        other form's run at the centre is a comparison, not a sweep point; the logit reading has one form)."""
        form = self.results["settings"].get("lw_form")
        return g.stage == "lwsupcrd" and (g.config.get("alpha_mode") == "logit" or g.config.get("lw_form") == form)

    def scored(self, pred) -> list[Group]:
        return [g for g in self.groups.values() if pred(g) and g.stats(self.key) is not None]

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
