"""Execute DeSupCon.ipynb in place, keeping its outputs: what the committed notebook shows. Its
cells stay those of desupcon.py; the run's flags reach it through $LWSUPCRD_ARGS, are printed first
by its set-up cell and recorded in the notebook's metadata (`lwsupcrd.flags`; a test compares them
with the settings the outputs print), and its links into the run's git-ignored output folder
become plain names, so that the committed notebook points at nothing a clone lacks.

    python scripts/run_notebook.py          # the original protocol's evidence preset, outputs under notebook_run/
    python scripts/run_notebook.py --preset smoke --data-dir DIR --out-dir DIR

On an empty out-dir this trains the whole study; where it already holds it (a finished `python
desupcon.py --preset evidence ... --out-dir notebook_run`, or a copy of one), every run is read
from its cached checkpoint and analysis.
"""
import argparse
import os
import re
import shlex
import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from lwsupcrd.files import write_text  # noqa: E402

LINK = re.compile(r"\[([^\]]+)\]\(([^)\s]+)\)")


def flags(argv: list[str]) -> list[str]:
    """desupcon.py's flags for the run shown (the script's own flags, checked when the notebook runs)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--protocol", default="lwsupcrd")
    p.add_argument("--preset", default="evidence")
    p.add_argument("--dataset", default=None)
    p.add_argument("--data-dir", default="/usr/share/datasets/fashion-mnist")
    p.add_argument("--out-dir", default="notebook_run")
    a = p.parse_args(argv)
    given = ["--protocol", a.protocol, "--preset", a.preset, "--data-dir", a.data_dir, "--out-dir", a.out_dir]
    return given + (["--dataset", a.dataset] if a.dataset else [])


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
    given = flags(argv)
    out_dir = given[given.index("--out-dir") + 1]
    path = ROOT / "DeSupCon.ipynb"
    nb = nbformat.read(path, as_version=4)
    os.environ["LWSUPCRD_ARGS"] = shlex.join(given)
    os.environ.setdefault("TQDM_DISABLE", "1")
    NotebookClient(nb, timeout=None, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}).execute()
    nb.metadata["lwsupcrd"] = {"flags": given}
    links = unlink_outputs(nb, ROOT / out_dir)
    write_text(path, nbformat.writes(nb))
    print(f"executed {path} with {shlex.join(given)}; {links} links into {out_dir} made plain; "
          f"{path.stat().st_size / 2**20:.1f} MB")


if __name__ == "__main__":
    main(sys.argv[1:])
