"""A run of a study: its name, stage, config and the runs it needs; how `--only` selects runs, how
`--list` shows them, and the order they train in (each after what it needs)."""
from __future__ import annotations

import fnmatch
from dataclasses import dataclass


@dataclass
class Run:
    name: str
    stage: str
    cfg: dict
    requires: tuple[str, ...] = ()
    base: str = ""  # the run's name without its seed suffix
    teacher: str | None = None  # the projection run whose head and keys it is distilled against
    control: str | None = None  # the run that differs from it in one thing only (bank rows)
    centre: bool = False  # an LW-SupCRD run at the sweeps' centre: a headline row
    init: str | None = None  # the initialisation run it starts from (AB, FT, FSP)

    def __post_init__(self):
        self.base = self.base or self.name

    @property
    def bank_ablation(self) -> bool:
        return self.stage == "bank_ablation"



def selects(pattern: str, run: Run) -> bool:
    """Whether `pattern` names `run`: its stage's name, or a run-name pattern (fnmatch) matched with and
    without the seed suffix."""
    return pattern == run.stage or fnmatch.fnmatch(run.name, pattern) or fnmatch.fnmatch(run.base, pattern)


def listing(runs: list[Run]) -> list[str]:
    """`--list`: one line per run, its stage, name and every setting that differs between the listed runs."""
    varying = sorted({k for r in runs for k in r.cfg if len({repr(x.cfg.get(k)) for x in runs}) > 1})
    return [f"{r.stage:14s} {r.name}  " + ", ".join(f"{k}={r.cfg[k]}" for k in varying if k in r.cfg) for r in runs]


def dependency_order(runs: dict[str, Run], only: list[str] | None = None) -> list[str]:
    """The runs that `only`'s stages and run-name patterns select (all if None) and, before each, the
    runs it needs."""
    wanted = [n for n, r in runs.items() if not only or any(selects(p, r) for p in only)]
    ordered: list[str] = []

    def visit(name):
        for dep in runs[name].requires:
            visit(dep)
        if name not in ordered:
            ordered.append(name)

    for name in wanted:
        visit(name)
    return ordered
