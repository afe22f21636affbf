"""DeSupCon.ipynb is generated from desupcon.py; it must not drift, and it must run headless."""
import ast
import json
import os
import re
import shlex
import subprocess
import sys

import jupytext
import nbformat
import pytest

from helpers import ROOT, results_file


def assigned(source):
    """`{NAME: value}` of a parameters cell."""
    return {node.targets[0].id: ast.literal_eval(node.value) for node in ast.parse(source).body
            if isinstance(node, ast.Assign)}


def test_notebook_mirrors_script():
    """Every cell, the parameters cell included: the shown run's flags come through $LWSUPCRD_ARGS."""
    script = jupytext.read(ROOT / "desupcon.py")
    notebook = jupytext.read(ROOT / "DeSupCon.ipynb")
    assert [c.source.strip() for c in script.cells if c.cell_type == "code"] == \
           [c.source.strip() for c in notebook.cells if c.cell_type == "code"], \
        "DeSupCon.ipynb drifted: run `jupytext --to ipynb desupcon.py -o DeSupCon.ipynb`, then scripts/run_notebook.py"
    assert [c.source.strip() for c in script.cells if c.cell_type == "markdown"] == \
           [c.source.strip() for c in notebook.cells if c.cell_type == "markdown"]
    params = [c for c in notebook.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1 and "FORCE_RETRAIN = False" in params[0].source \
        and "FORCE_RETRAIN_BANK_ABLATION = False" in params[0].source


def kernel_here(tmp_path, monkeypatch):
    """A Jupyter kernel of this interpreter, whatever kernels the machine has."""
    kernel = tmp_path / "jupyter" / "kernels" / "python3"
    kernel.mkdir(parents=True)
    (kernel / "kernel.json").write_text(json.dumps({"argv": [sys.executable, "-m", "ipykernel_launcher", "-f",
                                                             "{connection_file}"], "language": "python",
                                                    "display_name": "Python 3"}))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.setenv("TQDM_DISABLE", "1")
    monkeypatch.setenv("PYTHONPATH", str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))


def test_list_in_the_notebook_lists_and_stops(tmp_path, monkeypatch):
    """LWSUPCRD_ARGS="--list" in Jupyter prints the runs and ends Run All in one line; nothing trains."""
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    kernel_here(tmp_path, monkeypatch)
    monkeypatch.setenv("LWSUPCRD_ARGS", f"--preset smoke --list --out-dir {tmp_path / 'out'}")
    nb = nbformat.read(ROOT / "DeSupCon.ipynb", as_version=4)
    with pytest.raises(CellExecutionError, match="listed 21 runs"):
        NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}).execute()
    code = [c for c in nb.cells if c.cell_type == "code"]
    last = next(i for i, c in enumerate(code) if any(o.get("output_type") == "error" for o in c.get("outputs", [])))
    outputs = "".join(o.get("text", "") for c in code[:last + 1] for o in c.get("outputs", []))  # what this run printed
    assert "teacher_resnet8_cifar100_with_projection" in outputs and "== " not in outputs
    assert not list((tmp_path / "out").rglob("*.pth"))


def test_notebook_runs_headless_in_smoke_preset(smoke, tmp_path, monkeypatch):
    """Run All on a copy of the smoke study's outputs, with FORCE_RETRAIN_BANK_ABLATION set in the
    parameters: every cell runs, the bank runs train, the others come from cache."""
    import shutil

    from nbclient import NotebookClient

    data = smoke["data"]
    shutil.copytree(smoke["out"], tmp_path / "out")
    nb = nbformat.read(ROOT / "DeSupCon.ipynb", as_version=4)
    params = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    # what papermill does: a cell after the parameters that overrides them
    nb.cells.insert(nb.cells.index(params) + 1, nbformat.v4.new_code_cell(
        f'PRESET = "smoke"\nDATA_DIR = r"{data}"\nOUT_DIR = r"{tmp_path / "out"}"\nFORCE_RETRAIN_BANK_ABLATION = True'))
    kernel_here(tmp_path, monkeypatch)
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}).execute()
    outputs = "".join(o.get("text", "") + o.get("data", {}).get("text/markdown", "")
                      for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    code = [c for c in nb.cells if c.cell_type == "code"]
    with_images = [i for i, c in enumerate(code) if any("image/png" in o.get("data", {}) for o in c.get("outputs", []))]
    answer = next(i for i, c in enumerate(code) if "overview(" in c.source)
    assert with_images == [answer]  # the answer's comparative figures, and no per-run grid anywhere
    assert sum("image/png" in o.get("data", {}) for o in code[answer].outputs) == 4
    assert "Highest mean test accuracy" in outputs and "<details><summary>Per seed" in outputs
    assert not [o for c in code for o in c.outputs if o.output_type == "execute_result"]  # no stray objects
    assert "== student_lwsupcrd_bank64_resnet8_cifar100: training (forced)" in outputs
    assert "== student_baseline_supcon_resnet8_cifar100: cached" in outputs
    assert "## Main results" in outputs
    assert results_file(tmp_path / "out").exists()


def test_committed_notebook_opens_with_the_answer_and_stays_small():
    """The committed notebook: executed, its first figures are the answer's, it prints no stray
    object, and it is no larger than the per-run-grid notebook it replaced (2,690,552 bytes)."""
    nb = nbformat.read(ROOT / "DeSupCon.ipynb", as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.get("execution_count") for c in code), "commit the notebook executed"
    with_images = [i for i, c in enumerate(code) if any("image/png" in o.get("data", {}) for o in c.get("outputs", []))]
    assert with_images and "overview(" in code[with_images[0]].source and len(with_images) == 1
    assert not [o for c in code for o in c.outputs if o.output_type == "execute_result"]
    assert (ROOT / "DeSupCon.ipynb").stat().st_size <= 2_690_552


def committed():
    nb = nbformat.read(ROOT / "DeSupCon.ipynb", as_version=4)
    params = assigned(next(c for c in nb.cells if "parameters" in c.metadata.get("tags", [])).source)
    texts = ["".join(o.get("text", "") + o.get("data", {}).get("text/markdown", "") for o in c.get("outputs", []))
             for c in nb.cells if c.cell_type == "code"]
    return nb, params, texts


def test_committed_notebook_settings_are_those_of_the_run_it_shows():
    """The flags recorded in the metadata are those the set-up cell printed, and over the parameters
    cell they resolve to the settings the outputs print."""
    from lwsupcrd.options import StudyConfig, parse_args
    from lwsupcrd.protocol import PRESETS, STANDARD_PRESETS

    nb, params, texts = committed()
    flags = nb.metadata["lwsupcrd"]["flags"]
    lines = [line for t in texts for line in t.splitlines()]
    assert lines[0] == f"flags: {shlex.join(flags)} (from $LWSUPCRD_ARGS, over the parameters cell)"
    settings = ast.literal_eval(next(line for line in lines if line.startswith("settings: ")).removeprefix("settings: "))
    config = parse_args(flags, StudyConfig(**{k.lower(): v for k, v in params.items() if k.lower() in
                                              {"protocol", "preset", "dataset", "data_dir", "out_dir", "seed"}}))
    presets = STANDARD_PRESETS if config.protocol == "standard" else PRESETS
    assert settings.get("protocol", "lwsupcrd") == config.protocol and settings["preset"] == config.preset
    assert settings["dataset"] == (config.dataset or presets[config.preset]["dataset"])
    assert f"outputs under {config.out_dir}" in "".join(texts)


def test_committed_notebook_has_no_empty_section_no_dead_link_and_no_machine_path():
    nb, params, texts = committed()
    section, shown = None, {}
    for cell in nb.cells:
        if cell.cell_type == "markdown" and cell.source.startswith("## "):
            section = cell.source.splitlines()[0]
            shown.setdefault(section, False)
        elif cell.cell_type == "code" and section and cell.get("outputs"):
            shown[section] = True
    assert shown and not [s for s, any_output in shown.items() if not any_output], "sections with no output"
    ignored = []
    for text in texts + [c.source for c in nb.cells if c.cell_type == "markdown"]:
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"https?://|#", target):
                continue
            local = ROOT / target.split("#")[0]
            assert local.exists(), f"the notebook links to {target}, which a clone lacks"
            ignored.append(str(local))
    if ignored:
        res = subprocess.run(["git", "check-ignore", *ignored], cwd=ROOT, capture_output=True, text=True)
        assert res.stdout == "", f"links into ignored folders: {res.stdout}"
    machine = re.compile(r"(/root/|/home/|/tmp/|/work/|/Users/|[A-Z]:\\\\)")
    assert not [t for t in texts if machine.search(t)], "an output prints a path of the machine that ran it"
