"""Third-party encoders, data sets and attacks through entry points.

Plugins are installed for real, as far as importlib.metadata can tell: each test writes a
distribution (``<name>.dist-info`` with METADATA and entry_points.txt, plus its modules)
into a folder on sys.path, which is exactly what pip leaves in site-packages.
"""
import sys
from pathlib import Path

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from fixtures import install, reload_all, sound

import robrep
from robrep.cli import main
from robrep.harness import bench
from robrep.plugins import failures
from robrep.registry import ATTACKS, DATASETS, LEARNERS

EXAMPLE = Path(__file__).parent.parent / "examples" / "robrep-pca" / "src"
# the example's own version: a pip build of the example leaves its egg-info (that version) beside EXAMPLE
PCA_VERSION = tomllib.loads((EXAMPLE.parent / "pyproject.toml").read_text())["project"]["version"]
SMALL = dict(epochs=1, radii=(0.0, 0.1), steps=3, restarts=1, n_examples=50)


@pytest.fixture
def pca(site, monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLE))
    install(site, "robrep-pca", "[robrep.encoders]\npca = robrep_pca:PCAEncoder\n", version=PCA_VERSION)
    reload_all()
    return site


def test_the_example_pca_plugin_is_listed_and_benchmarked_like_a_built_in(pca, tmp_path, capsys):
    assert "pca" in robrep.list_learners() and LEARNERS.origin("pca") == f"robrep-pca {PCA_VERSION}"
    assert main(["list"]) == 0
    assert f"robrep-pca {PCA_VERSION}" in capsys.readouterr().out
    df = bench(out=str(tmp_path / "b"), learners=("pca", "vae"), **SMALL)
    assert set(df["learner"]) == {"pca", "vae"} and sound(df)
    pca_rows = df[df["learner"] == "pca"].set_index("radius")
    assert pca_rows.loc[0.0, "nominal_accuracy"] > 0.6  # 32 principal directions of the digits, linear probe
    assert pca_rows.loc[0.1, "adversarial_accuracy"] < pca_rows.loc[0.0, "adversarial_accuracy"]
    # the fitted PCA is saved like any learner and reloads through the registry
    run = df[df["learner"] == "pca"]["checkpoint"].iloc[0]
    loaded = robrep.load(run)
    assert type(loaded).__name__ == "PCAEncoder" and float(loaded.components.abs().sum()) > 0


def test_broken_plugins_are_reported_and_skipped_and_the_run_completes(site, tmp_path):
    install(site, "brokenplugins", """
        [robrep.encoders]
        badimport = no_such_module:Encoder
        wrongshape = brokenmods:WrongShape
        nanout = brokenmods:NaNOut
        vae = brokenmods:WrongShape
        notamodule = brokenmods:make
        noepochs = brokenmods:NoEpochs
        fitfails = brokenmods:FitFails
        lossnan = brokenmods:LossNaN
    """, {"brokenmods": """
        from dataclasses import dataclass
        import torch

        @dataclass
        class Config:
            shape: tuple = (1, 28, 28)

        class WrongShape(torch.nn.Module):
            config_class = Config
            def __init__(self, config=None):
                super().__init__()
                self.config = config or Config()
                self.w = torch.nn.Parameter(torch.ones(1))
            def fit(self, images, seed=0):
                pass
            def encode(self, x):
                return x.flatten(1).sum(1) * self.w, x.flatten(1).sum(1)  # (N,), not (N, d)

        class NaNOut(WrongShape):
            def encode(self, x):
                mu = torch.full((x.shape[0], 4), float("nan"))
                return mu, mu

        def make():
            return None

        class FitFails(WrongShape):
            def fit(self, images, seed=0):
                raise RuntimeError("singular matrix in fit")

        @dataclass
        class GradConfig:
            shape: tuple = (1, 28, 28)
            epochs: int = 1
            batch_size: int = 500
            lr: float = 1e-3

        class LossNaN(torch.nn.Module):
            config_class = GradConfig
            def __init__(self, config=None):
                super().__init__()
                self.config = config or GradConfig()
                self.lin = torch.nn.Linear(784, 4)
            def encode(self, x):
                mu = self.lin(x.flatten(1))
                return mu, mu
            def loss(self, x):
                return {"loss": self.lin(x.flatten(1)).sum() * float("nan")}

        class NoEpochs(torch.nn.Module):  # trained by gradient, but its config has no epochs/batch_size/lr
            config_class = Config
            def encode(self, x):
                return x, x
            def loss(self, x):
                return {"loss": x.sum()}
    """})
    reload_all()
    failed = {f.name: f for f in failures()}
    assert "ModuleNotFoundError" in failed["badimport"].error and failed["badimport"].distribution == "brokenplugins 0.1.0"
    assert "duplicate learner name 'vae'" in failed["vae"].error and LEARNERS.origin("vae") == "built-in"
    assert "notamodule" not in failed  # a factory: what it returns is checked when the bench calls it
    assert "batch_size, epochs, lr" in failed["noepochs"].error
    assert {"wrongshape", "nanout"} <= set(robrep.list_learners())
    df = bench(out=str(tmp_path / "b"), learners=("wrongshape", "nanout", "badimport", "notamodule", "fitfails",
                                                   "lossnan", "vae"), strict=False, **SMALL)
    assert set(df["learner"]) == {"vae"}
    skipped = {s["learner"]: s["error"] for s in df.attrs["skipped"]}
    assert "brokenmods.make returned NoneType, not a torch.nn.Module" in skipped["notamodule"]
    assert "built, trained or loaded on mnist5k: RuntimeError: singular matrix in fit" in skipped["fitfails"]
    assert "FloatingPointError: non-finite loss at epoch 0 step 0" in skipped["lossnan"]
    assert "shape (N, d)" in skipped["wrongshape"]
    assert "non-finite" in skipped["nanout"]
    assert "failed to load" in skipped["badimport"] and "ModuleNotFoundError" in skipped["badimport"]


def test_dataset_and_attack_plugins(site, tmp_path):
    install(site, "dataplug", """
        [robrep.datasets]
        tiny-digits = dataplug:tiny
        [robrep.attacks]
        fgsm-native = dataplug:fgsm
        returns-nothing = dataplug:nothing
        identity = dataplug:identity
    """, {"dataplug": """
        import torch
        import robrep
        from robrep.attacks import PGD, Attack

        def tiny(root=None, download=False):
            '''The first 500 training and 100 test digits of mnist5k.'''
            ds = robrep.load_dataset("mnist5k")
            return robrep.Dataset("tiny-digits", ds.train.subset(slice(0, 500)), ds.test.subset(slice(0, 100)), ds.tasks)

        def fgsm(n_classes, *, steps, restarts, norm):
            '''One full-size signed-gradient step from a random start.'''
            return PGD(steps=1, restarts=1, rel_stepsize=1.0)

        def nothing(n_classes, *, steps, restarts, norm):
            return None

        class Identity(Attack):
            name = "identity"

            def perturb(self, model, x, y, eps, generator, progress=None):
                return torch.zeros(len(x), dtype=torch.bool), x.clone()

        def identity(n_classes, *, steps, restarts, norm):
            '''Returns its inputs unchanged: an attack that silently does nothing.'''
            return Identity()
    """})
    reload_all()
    assert DATASETS.origin("tiny-digits") == "dataplug 0.1.0" and "fgsm-native" in ATTACKS.list()
    df = bench(out=str(tmp_path / "b"), learners=("vae",), datasets=("tiny-digits",), suites=("native", "plugins"),
               **SMALL)
    assert set(df["suite"]) == {"native", "plugins", "worst-case"} and (df["n_examples"] == 50).all()
    # the attack that does nothing: its rows fail the explored check
    nothing = df[(df["attack"] == "identity") & (df["radius"] > 0)]
    assert len(nothing) and (nothing["check_explored"] == False).all() and not nothing["checks_passed"].any()  # noqa: E712
    assert nothing["warnings"].str.contains("barely moved").all()
    assert sound(df[df["attack"] == "pgd"])
    assert any(f.name == "returns-nothing" and "not a robrep.attacks.Attack" in f.error for f in failures())


def test_plugins_can_be_turned_off(pca, monkeypatch):
    monkeypatch.setenv("ROBREP_DISABLE_PLUGINS", "1")
    reload_all()
    assert "pca" not in robrep.list_learners()


def test_train_command_fits_a_closed_form_plugin(pca, tmp_path, capsys):
    assert main(["train", "--learner", "pca", "--out", str(tmp_path / "pca"), "--set", "latent_dim=8"]) == 0
    assert "fitted in" in capsys.readouterr().out
    assert robrep.load(tmp_path / "pca").components.shape == (784, 8)
