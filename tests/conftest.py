import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))  # tests/fixtures.py

from fixtures import reload_all  # noqa: E402

torch.set_num_threads(min(2, torch.get_num_threads()))


def pytest_configure(config):
    """pandas' warnings of what its next major version will refuse are errors here: robrep must keep working
    when it arrives (where this pandas has them)."""
    import pandas.errors

    if hasattr(pandas.errors, "Pandas4Warning"):
        config.addinivalue_line("filterwarnings", "error::pandas.errors.Pandas4Warning")


@pytest.fixture(autouse=True)
def _threads_restored():
    """A test that benches with threads=N in this process leaves torch's thread count as it found it (a bench
    sets it for the rest of the process; other tests' premises rest on the process default)."""
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Tests never read or write the user's robrep cache or data folders."""
    monkeypatch.setenv("ROBREP_CACHE", str(tmp_path_factory.getbasetemp() / "robrep-cache"))
    monkeypatch.delenv("ROBREP_DATA", raising=False)


@pytest.fixture(scope="session")
def mnist5k():
    from robrep.data import load_dataset

    return load_dataset("mnist5k")


@pytest.fixture(scope="session")
def undefended(mnist5k):
    """A VAE trained briefly on the real digits, a linear probe on its means, and 300 test digits."""
    import robrep
    from robrep.probes import ProbedEncoder, features, train_probe

    learner = robrep.train("vae", mnist5k, out=False, max_steps=120, seed=0)
    probe = train_probe(features(learner, mnist5k.train.images), mnist5k.train.labels["digit"], 10)
    x, y = mnist5k.test.batch(slice(0, 300)), mnist5k.test.labels["digit"][:300]
    return ProbedEncoder(learner, probe), x, y


@pytest.fixture
def site(tmp_path, monkeypatch):
    """A site folder on sys.path (install plugins with fixtures.install); registries re-read their entry
    points after the test, and modules imported from the folder are forgotten."""
    folder = tmp_path / "site"
    folder.mkdir()
    monkeypatch.syspath_prepend(str(folder))
    yield folder
    monkeypatch.undo()
    for name, mod in list(sys.modules.items()):
        if str(getattr(mod, "__file__", "") or "").startswith(str(folder)) or name.startswith("robrep_pca"):
            del sys.modules[name]
    reload_all()
