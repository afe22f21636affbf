"""The experiment is stated once: run names and sweep values live in the protocol module, and
everything else asks it; no module is one a newcomer has to scroll through."""
import ast
import re

from helpers import ROOT
from lwsupcrd.protocol import PRESETS, build_runs

READERS = sorted((ROOT / "lwsupcrd").glob("*.py")) + [ROOT / "desupcon.py"]


def test_run_names_and_sweep_values_are_only_in_the_protocol():
    names = {r.base for p in PRESETS for r in build_runs(dict(PRESETS[p], seed=0))}
    stems = {re.sub(r"_(resnet|wrn)[^_]*_[^_]+$", "", n) for n in names if n.startswith("student_")}
    stems.add("_with_projection")
    for path in READERS:
        if path.name in ("protocol.py", "methods.py"):  # the experiment, and the methods' defaults
            continue
        source = path.read_text()
        assert not [s for s in stems if s in source], f"{path.name} names runs of the protocol"
        for node in ast.walk(ast.parse(source)):
            pairs = []
            if isinstance(node, ast.Call):
                pairs = [(k.arg, k.value) for k in node.keywords]
            elif isinstance(node, ast.Dict):
                pairs = [(k.value, v) for k, v in zip(node.keys, node.values) if isinstance(k, ast.Constant)]
            fixed = [k for k, v in pairs if k in ("alpha", "beta", "temperature") and isinstance(v, ast.Constant)
                     and isinstance(v.value, (int, float))]
            # a plot's alpha is transparency; beta, tau, or alpha beside them, is a point of the sweeps
            sweep_point = [k for k in fixed if k != "alpha"] or len(fixed) > 1
            assert not sweep_point, f"{path.name}:{node.lineno} fixes {fixed} (the sweeps' values belong to protocol.py)"


def test_no_module_or_function_to_scroll_through():
    for path in READERS:
        source = path.read_text()
        assert len(source.splitlines()) <= 370, f"{path.name} has {len(source.splitlines())} lines"
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                body = node.end_lineno - node.body[0].lineno + 1  # the docstring counts; the signature does not
                assert body <= 75, f"{path.name}: {node.name} is {body} lines"


def test_the_method_registry_is_the_only_place_that_lists_methods():
    """No module but methods.py and terms.py names a standard method or term (beyond the original protocol's own
    step names, which it shares), nor fixes a method's loss weights; comparisons.py names them only
    to declare the family of comparisons (analysis, kept out of the fingerprinted modules), and a
    test checks that each name is a row of the registry."""
    from lwsupcrd.methods import METHODS, STANDARD, TERMS

    shared = {m.name for m in METHODS.values() if m.protocol != "standard"}  # a run's `method` names these
    names = (set(STANDARD) | set(TERMS)) - shared - {"kd"}  # "kd" is also the KD term's log column
    weights = {"gamma", "kd_weight", "distill_weight", "term_weight"}
    for path in READERS:
        if path.name in ("methods.py", "terms.py"):  # the registry: the methods and the terms they combine
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and path.name != "comparisons.py":
                assert node.value not in names, f"{path.name}:{node.lineno} names the method {node.value!r}"
            pairs = []
            if isinstance(node, ast.Call):
                pairs = [(k.arg, k.value) for k in node.keywords]
            elif isinstance(node, ast.Dict):
                pairs = [(k.value, v) for k, v in zip(node.keys, node.values) if isinstance(k, ast.Constant)]
            fixed = [k for k, v in pairs if k in weights and isinstance(v, ast.Constant)]
            assert not fixed, f"{path.name}:{node.lineno} fixes the loss weights {fixed} (they belong to methods.py)"


def test_the_code_fingerprint_covers_every_module_a_run_is_computed_by():
    """Every package module that training (train.py) and scoring (probe.py) import, directly or not,
    is in code.COMPUTE_MODULES; only file handling, provenance and the handling of stop signals are
    left out."""
    from lwsupcrd.code import COMPUTE_MODULES

    package = ROOT / "lwsupcrd"
    seen, todo = set(), ["train", "probe"]
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        if module in ("code", "files", "checkpoint", "signals"):  # provenance, files, signals: not traversed
            continue
        for node in ast.walk(ast.parse((package / f"{module}.py").read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                todo += [node.module] if node.module else [a.name for a in node.names]
    outside = {"code", "files", "checkpoint", "signals"}
    assert seen - outside <= set(COMPUTE_MODULES), sorted(seen - set(COMPUTE_MODULES))


def package_imports() -> dict[str, set[str]]:
    """Each module of the package and the package modules it imports, at any depth of its code."""
    graph = {}
    for path in sorted((ROOT / "lwsupcrd").glob("*.py")):
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                deps |= {node.module} if node.module else {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("lwsupcrd."):
                deps.add(node.module.split(".")[1])
        graph[path.stem] = deps - {path.stem}
    return graph


# results file -> statistics -> tables and figures -> documents -> the study that writes them
RESULTS_TO_PAGE = (("groups", "comparisons", "benchmark", "roles"), ("report", "plots"),
                   ("analysis", "overview", "show", "readme"), ("study",))


def test_the_package_imports_in_one_direction():
    graph = package_imports()
    done, path = set(), []

    def visit(module):
        assert module not in path, "import circle: " + " -> ".join(path[path.index(module):] + [module])
        if module in done:
            return
        path.append(module)
        for dep in sorted(graph.get(module, ())):
            visit(dep)
        path.pop()
        done.add(module)

    for module in graph:
        visit(module)
    layer = {m: i for i, names in enumerate(RESULTS_TO_PAGE) for m in names}
    assert set(layer) <= set(graph)
    for module, deps in graph.items():
        for dep in deps & set(layer):
            assert layer[dep] <= layer.get(module, 0), f"{module} imports {dep}, a layer above it"
