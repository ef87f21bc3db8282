import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))  # tests/fixtures.py

torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Tests never read or write the user's robrep cache or data folders."""
    monkeypatch.setenv("ROBREP_CACHE", str(tmp_path_factory.getbasetemp() / "robrep-cache"))
    monkeypatch.delenv("ROBREP_DATA", raising=False)


@pytest.fixture(scope="session")
def mnist5k():
    from robrep.data import load_dataset

    return load_dataset("mnist5k")
