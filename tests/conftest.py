import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """Where Multi30k lives: $NMT_DATA_DIR (CI sets it), else ../shared/data beside the repo."""
    d = Path(os.environ.get("NMT_DATA_DIR", ROOT.parent / "shared" / "data"))
    if not (d / "multi30k" / "train.de.gz").is_file():
        pytest.fail(f"Multi30k not found under {d}; set NMT_DATA_DIR")
    return d
