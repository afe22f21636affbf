import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TQDM_DISABLE", "1")


@pytest.fixture(scope="session")
def smoke(tmp_path_factory):
    """One smoke study on generated CIFAR-format data, shared by the tests that read its outputs."""
    from helpers import run_script
    from lwsupcrd.data import write_cifar_like

    root = tmp_path_factory.mktemp("smoke")
    data = write_cifar_like(root / "data", train_per_class=5, test_per_class=2)
    out = root / "out"
    first = run_script("--preset", "smoke", "--data-dir", data, "--out-dir", out)
    assert first.returncode == 0, first.stderr[-3000:]
    return {"root": root, "data": data, "out": out, "first": first}


# whole-study fixtures train real (tiny) runs: a test that needs one is an end-to-end case
END_TO_END_FIXTURES = {"smoke", "prepared"}


def pytest_collection_modifyitems(items):
    for item in items:
        if END_TO_END_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
