"""Execute DeSupCon.ipynb in place, keeping its outputs, on the standard protocol's evidence preset
(Fashion-MNIST): what the committed notebook shows. The cells are not touched (the study's flags come through
$LWSUPCRD_ARGS), so the notebook still mirrors desupcon.py.

    python scripts/run_notebook.py                      # standard evidence preset, outputs under notebook_run/
    python scripts/run_notebook.py --preset smoke --data-dir DIR --out-dir DIR   # any flags of desupcon.py

On an empty notebook_run/ this trains the whole study (about two hours on 2 CPU cores); where that
folder already holds it (a finished `python desupcon.py --protocol standard --preset evidence ...
--out-dir notebook_run`, or a copy of one), every run is read from its cached checkpoint and analysis.
"""
import os
import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from lwsupcrd.files import write_text  # noqa: E402

DEFAULT = ["--protocol", "standard", "--preset", "evidence", "--data-dir", "/usr/share/datasets/fashion-mnist",
           "--out-dir", "notebook_run"]


def main(argv: list[str]) -> None:
    path = ROOT / "DeSupCon.ipynb"
    nb = nbformat.read(path, as_version=4)
    os.environ["LWSUPCRD_ARGS"] = " ".join(argv or DEFAULT)
    os.environ.setdefault("TQDM_DISABLE", "1")
    NotebookClient(nb, timeout=None, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}).execute()
    write_text(path, nbformat.writes(nb))
    print(f"executed {path} with {os.environ['LWSUPCRD_ARGS']}; {path.stat().st_size / 2**20:.1f} MB")


if __name__ == "__main__":
    main(sys.argv[1:])
