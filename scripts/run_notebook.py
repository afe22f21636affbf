"""Execute DeSupCon.ipynb in place, keeping its outputs: what the committed notebook shows. Its
parameters cell is set to the run it shows (generated together; a test compares the cell with the
settings the outputs print), and its links into the run's git-ignored output folder become plain
names, so that the committed notebook points at nothing a clone lacks.

    python scripts/run_notebook.py          # the original protocol's evidence preset, outputs under notebook_run/
    python scripts/run_notebook.py --preset smoke --data-dir DIR --out-dir DIR

On an empty out-dir this trains the whole study; where it already holds it (a finished `python
desupcon.py --preset evidence ... --out-dir notebook_run`, or a copy of one), every run is read
from its cached checkpoint and analysis.
"""
import argparse
import os
import re
import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from lwsupcrd.files import write_text  # noqa: E402

LINK = re.compile(r"\[([^\]]+)\]\(([^)\s]+)\)")


def parameters(argv: list[str]) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--protocol", default="lwsupcrd")
    p.add_argument("--preset", default="evidence")
    p.add_argument("--dataset", default=None)
    p.add_argument("--data-dir", default="/usr/share/datasets/fashion-mnist")
    p.add_argument("--out-dir", default="notebook_run")
    a = p.parse_args(argv)
    return {"PROTOCOL": a.protocol, "PRESET": a.preset, "DATASET": a.dataset, "DATA_DIR": a.data_dir,
            "OUT_DIR": a.out_dir}


def set_parameters(cell, values: dict) -> None:
    """Each `NAME = value  # comment` line of the parameters cell takes the run's value, its comment kept."""
    for name, value in values.items():
        pattern = re.compile(rf"^{name} = [^#\n]*?(\s*#.*)?$", re.M)
        if not pattern.search(cell.source):
            raise SystemExit(f"error: the notebook's parameters cell has no {name}")
        cell.source = pattern.sub(lambda m: f"{name} = {value!r}{m.group(1) or ''}", cell.source, count=1)


def unlink_outputs(nb, out_dir: Path) -> int:
    """Links in the outputs to files under `out_dir` (git-ignored, absent from a clone) become their text."""
    out_dir = out_dir.resolve()
    count = 0

    def plain(m):
        nonlocal count
        target = (ROOT / m.group(2)).resolve()
        if target == out_dir or out_dir in target.parents:
            count += 1
            return m.group(1)
        return m.group(0)

    for cell in nb.cells:
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            if "text/markdown" in data:
                data["text/markdown"] = LINK.sub(plain, data["text/markdown"])
    return count


def main(argv: list[str]) -> None:
    values = parameters(argv)
    path = ROOT / "DeSupCon.ipynb"
    nb = nbformat.read(path, as_version=4)
    set_parameters(next(c for c in nb.cells if "parameters" in c.metadata.get("tags", [])), values)
    os.environ.pop("LWSUPCRD_ARGS", None)  # the parameters cell alone says what ran
    os.environ.setdefault("TQDM_DISABLE", "1")
    NotebookClient(nb, timeout=None, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}).execute()
    links = unlink_outputs(nb, ROOT / values["OUT_DIR"])
    write_text(path, nbformat.writes(nb))
    print(f"executed {path} with {values}; {links} links into {values['OUT_DIR']} made plain; "
          f"{path.stat().st_size / 2**20:.1f} MB")


if __name__ == "__main__":
    main(sys.argv[1:])
