"""Shared fixtures for the end-to-end tests: the lab (with cleanup) and the sluiced binary."""
import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import lab as labmod  # noqa: E402

ROOT = labmod.ROOT


@pytest.fixture(scope="session")
def sluiced():
    path = Path(os.environ.get("SLUICED", ROOT / "target" / "release" / "sluiced"))
    assert path.exists(), f"{path} not built (scripts/test.sh builds it)"
    return path


@pytest.fixture
def lab():
    """A fresh lab under the prefix `slt` (so a demo lab `sl` is left alone); always removed."""
    lab = labmod.Lab(prefix="slt")
    lab.up()
    try:
        yield lab
    finally:
        lab.down()
