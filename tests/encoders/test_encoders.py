"""Any encoder, in one step (robrep.encoders): plain modules, classes, factories, ``module:attr`` specs and
entry points reach the same frozen-encoder path; preprocessing keeps attacks in pixel space; provenance is
recorded; strict and non-strict errors name the learner; checkpoints cannot be edited unnoticed.

The encoders are real modules, written into a site folder on sys.path (``plainenc``) or installed as a
distribution, and benchmarked for real on mnist5k digits.
"""
import importlib
import importlib.metadata
import json
from pathlib import Path

import pandas as pd
import pytest
import torch
from torch import nn

import robrep
from fixtures import install, reload_all, sound
from robrep.checkpoint import CheckpointError, state_bytes
from robrep.io import sha256_bytes
from robrep.cli import main
from robrep.encoders import IMAGENET, ContractError, Encoder, LearnerError, Preprocessing
from robrep.harness import BenchConfig, bench
from robrep.registry import UnknownNameError

SMALL = dict(radii=(0.0, 0.1), steps=3, restarts=1, n_examples=40)

PLAINENC = """
    import torch
    from torch import nn


    class Features(nn.Module):
        '''Random tanh features of the pixels: forward only, plain features (N, 64).'''
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(784, 64)

        def forward(self, x):
            return torch.tanh(self.lin(x.flatten(1)))


    class Gaussian(nn.Module):
        '''encode(x) -> (mu, logvar), a no-argument constructor, no config class.'''
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(784, 16)

        def encode(self, x):
            mu = self.lin(x.flatten(1))
            return mu, torch.zeros_like(mu)

        def loss(self, x):  # robrep must never call this: it does not train what it was handed
            raise AssertionError("robrep trained a plain module")


    class Shaped(nn.Module):
        '''Built with shape=(C, H, W); returns a feature map (N, 4, H/2, W/2), flattened by robrep.'''
        def __init__(self, shape=(3, 8, 8)):
            super().__init__()
            self.conv = nn.Conv2d(shape[0], 4, 3, stride=2, padding=1)

        def forward(self, x):
            return self.conv(x)


    class Tied(nn.Module):
        '''Two layers sharing one weight (safetensors refuses shared tensors unless robrep copies them).'''
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(784, 784, bias=False)
            self.b = nn.Linear(784, 784, bias=False)
            self.b.weight = self.a.weight

        def forward(self, x):
            return self.b(torch.relu(self.a(x.flatten(1))))[:, :32]


    def make_features():
        return Features()


    class Raises(Features):
        def encode(self, x):  # encode is the representation when a module has it
            raise RuntimeError("boom inside the plugin")


    class NaNOnLargeBatches(Features):
        '''Finite on the 8-image contract check, NaN on larger batches.'''
        def forward(self, x):
            out = super().forward(x)
            return out * float("nan") if x.shape[0] > 8 else out


    class FailsUnderGradient(Features):
        '''Fine for features and probes, raises once an attack asks for a gradient.'''
        def forward(self, x):
            if x.requires_grad:
                raise RuntimeError("no gradient through this encoder")
            return super().forward(x)


    class Broken(Features):
        def __init__(self):
            raise ValueError("cannot build")


    class ReturnsDict(Features):
        def forward(self, x):
            return {"features": super().forward(x)}


    class IntegerFeatures(Features):
        def forward(self, x):
            return (super().forward(x) * 100).long()


    def returns_none():
        return None
"""


@pytest.fixture
def plainenc(site):
    (site / "plainenc.py").write_text(__import__("textwrap").dedent(PLAINENC))
    import plainenc

    return plainenc


def rows_of(df: pd.DataFrame, label: str) -> pd.DataFrame:
    return df[df["label"] == label].sort_values("radius")


@pytest.mark.slow
def test_every_form_reaches_the_same_frozen_encoder_path(plainenc, tmp_path):
    """An instance, a class, a factory and 'module:attr' of the same module give one encoder and the same
    numbers; a class built under the bench's seed gets the same weights wherever it is named."""
    forms = [plainenc.Features, "plainenc:Features", plainenc.make_features, "plainenc:make_features"]
    # one run each: the same encoder under two labels in one run is one set of rows (its key is the SHA-256)
    df = pd.concat([bench(out=str(tmp_path / str(i)), learners=[form], **SMALL) for i, form in enumerate(forms)])
    assert set(df["label"]) == {"Features", "plainenc:Features", "make_features", "plainenc:make_features"}
    assert df["encoder_sha256"].nunique() == 1 and sound(df)
    by_form = df.pivot_table(index="radius", columns="label", values="adversarial_accuracy")
    assert (by_form.nunique(axis=1) == 1).all()
    assert by_form.loc[0.0].iloc[0] > 0.5 and by_form.loc[0.1].iloc[0] < by_form.loc[0.0].iloc[0]
    config = json.loads(df["learner_config"].iloc[0])
    assert config["output"] == "forward" and config["class"] == "plainenc.Features" and config["preprocessing"] is None
    sources = dict(zip(df["label"], df["source"]))
    assert sources["Features"].startswith("python class plainenc.Features")
    assert sources["plainenc:Features"].startswith("plainenc:Features")
    assert sources["make_features"].startswith("python factory plainenc.make_features")
    assert (df["checkpoint"].fillna("") == "").all()  # robrep saved nothing of an encoder it did not train
    assert df["train_seconds"].isna().all()  # nor timed its training


@pytest.mark.slow
def test_instances_pairs_feature_maps_and_tied_weights(plainenc, tmp_path):
    gauss, features = plainenc.Gaussian(), plainenc.Features()
    before = {k: v.clone() for k, v in features.state_dict().items()}
    df = bench(out=str(tmp_path / "out"), learners=[gauss, features, plainenc.Tied(), "plainenc:Shaped"], **SMALL)
    assert set(df["label"]) == {"Gaussian", "Features", "Tied", "plainenc:Shaped"} and sound(df)
    # the caller's object is untouched: still training mode, still trainable, same weights
    assert features.training and all(p.requires_grad for p in features.parameters())
    assert all(torch.equal(before[k], v) for k, v in features.state_dict().items())
    # its hash is the SHA-256 of its state dict as safetensors
    assert rows_of(df, "Features")["encoder_sha256"].iloc[0] == sha256_bytes(state_bytes(features))
    shaped = json.loads(rows_of(df, "plainenc:Shaped")["learner_config"].iloc[0])
    assert shaped["shape"] == [1, 28, 28]  # built with the data set's shape (its default is 3 x 8 x 8)
    assert json.loads(rows_of(df, "Gaussian")["learner_config"].iloc[0])["output"] == "encode"


@pytest.mark.slow
def test_resnet18_by_module_attr_with_imagenet_preprocessing(tmp_path, capsys):
    """The reviewers' command: torchvision's ResNet-18 (random weights) with its ImageNet normalisation."""
    import torchvision

    out = tmp_path / "out"
    assert main(["bench", "--learner", "torchvision.models:resnet18", "--preprocessing", "imagenet",
                 "--dataset", "colormnist5k", "--task", "color", "--radii", "0,0.05", "--steps", "3",
                 "--restarts", "1", "--n-examples", "30", "--out", str(out)]) == 0
    assert "torchvision.models:resnet18" in capsys.readouterr().out
    df = pd.read_csv(out / "results.csv")
    assert len(df) == 2 and sound(df) and (df["max_perturbation"] <= 0.05 + 1e-6).all()
    version = importlib.metadata.version("torchvision")
    assert df["source"].iloc[0] == f"torchvision.models:resnet18 (torchvision {version})"
    assert json.loads(df["learner_config"].iloc[0])["preprocessing"] == {k: list(v) for k, v in IMAGENET.items()}
    torch.manual_seed(0)  # the bench builds it under its seed (0)
    expected = Encoder(torchvision.models.resnet18(), preprocessing="imagenet").weights()
    assert df["encoder_sha256"].iloc[0] == sha256_bytes(state_bytes(expected))
    assert df["nominal_accuracy"].iloc[0] > 0.5  # random ResNet features still tell 7 colours apart


def test_preprocessing_is_applied_in_front_of_the_module():
    module = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 5))
    x = torch.rand(6, 3, 4, 4)
    enc = Encoder(module, preprocessing={"mean": [0.1, 0.2, 0.3], "std": 0.5})
    expected = module((x - torch.tensor([0.1, 0.2, 0.3]).view(1, 3, 1, 1)) / 0.5)
    assert torch.allclose(enc(x), expected)
    assert torch.allclose(Encoder(module, preprocessing="imagenet")(x),
                          module((x - torch.tensor(IMAGENET["mean"]).view(1, 3, 1, 1))
                                 / torch.tensor(IMAGENET["std"]).view(1, 3, 1, 1)))
    assert Preprocessing.parse("mean=0.5,0.5,0.5 std=0.25,0.25,0.25") == Preprocessing((0.5,) * 3, (0.25,) * 3)
    assert Preprocessing.parse("mean=0.5;std=0.2") == Preprocessing((0.5,), (0.2,))
    assert Preprocessing.parse("none") is None and Preprocessing.parse(None) is None
    module.preprocessing = {"mean": 0.5, "std": 0.5}  # declared by the module itself
    assert Encoder(module).preprocessing == Preprocessing((0.5,), (0.5,))
    for bad, message in (({"mean": 0.5}, "exactly the keys mean and std"), ({"mean": 0, "std": 0}, "positive"),
                         ("imagenett", "expected a preset"), ({"mean": "a", "std": 1}, "numbers")):
        with pytest.raises(ContractError, match=message):
            Preprocessing.parse(bad)
    with pytest.raises(ContractError, match="3 values per channel, but the inputs have 1"):
        Encoder(nn.Flatten(), preprocessing="imagenet")(torch.rand(2, 1, 4, 4))
    with pytest.raises(ValueError, match="expected a preset"):
        BenchConfig(preprocessing="imagenett")  # refused before any work


def test_a_string_is_one_learner(tmp_path):
    assert BenchConfig(learners="vae").learners == ("vae",)
    assert BenchConfig(learners="vae", datasets="mnist5k", suites="native", tasks="digit").tasks == ("digit",)
    (tmp_path / "one.toml").write_text('learners = "vae"\ndatasets = "mnist5k"\n')
    cfg = BenchConfig.from_toml(tmp_path / "one.toml")
    assert cfg.learners == ("vae",) and cfg.datasets == ("mnist5k",)
    module = nn.Linear(2, 2)
    assert BenchConfig(learners=module).learners == (module,)


def test_strict_raises_on_unknown_names_wrong_types_and_failing_encoders(plainenc, tmp_path):
    with pytest.raises(UnknownNameError, match="unknown learner 'no-such'.*known learners: .*beta-vae"):
        bench(out=str(tmp_path / "out"), learners=["no-such"], **SMALL)
    with pytest.raises(LearnerError, match="learner '42' is of type int; a learner is a registered name"):
        bench(out=str(tmp_path / "out"), learners=[42], **SMALL)
    with pytest.raises(LearnerError, match="nosuchmodule.*importing 'nosuchmodule' failed: ModuleNotFoundError"):
        bench(out=str(tmp_path / "out"), learners=["nosuchmodule:Encoder"], **SMALL)
    with pytest.raises(LearnerError, match="plainenc:Nope.*no attribute 'Nope'"):
        bench(out=str(tmp_path / "out"), learners=["plainenc:Nope"], **SMALL)
    with pytest.raises(LearnerError, match=r"learner 'plainenc:Raises' \(not from an installed distribution\) failed "
                                           r"the contract check .*RuntimeError: boom inside the plugin"):
        bench(out=str(tmp_path / "out"), learners=["plainenc:Raises"], **SMALL)
    assert not (tmp_path / "out" / "results.csv").exists()  # nothing was half-done


BROKEN = {  # label -> what the error must say
    "plainenc:Raises": "boom inside the plugin",
    "plainenc:NaNOnLargeBatches": "while encoding the training split on mnist5k: ContractError: encoder "
                                  "'plainenc:NaNOnLargeBatches': forward(x) returned non-finite values on a batch",
    "plainenc:FailsUnderGradient": "under attack native/pgd (task digit) on mnist5k: RuntimeError: no gradient",
    "plainenc:Broken": "while being built, trained or loaded on mnist5k: ValueError: cannot build",
    "plainenc:returns_none": "plainenc.returns_none returned NoneType, not a torch.nn.Module",
    "plainenc:ReturnsDict": "must return a tensor (N, ...) or a (mu, logvar) pair of tensors, got dict",
    "plainenc:IntegerFeatures": "features must be floating point, got torch.int64",
    "no-such": "unknown learner 'no-such'",
    "3": "learner '3' is of type int; a learner is a registered name",
}


def test_non_strict_skips_what_fails_anywhere_on_its_path_and_the_rest_completes(plainenc, tmp_path):
    learners = [*BROKEN.keys() - {"3"}, 3, "plainenc:Features"]
    df = bench(out=str(tmp_path / "out"), learners=learners, strict=False, **SMALL)
    assert set(df["label"]) == {"plainenc:Features"} and len(df) == 2 and sound(df)
    skipped = {s["learner"]: s["error"] for s in df.attrs["skipped"]}
    assert set(skipped) == set(BROKEN)
    for label, message in BROKEN.items():
        assert message in skipped[label], (label, skipped[label])


def test_the_cli_summarises_skipped_learners_and_exits_non_zero(plainenc, tmp_path, capsys):
    argv = ["bench", "--learner", "plainenc:Features", "--learner", "no-such", "--learner", "plainenc:Raises",
            "--radii", "0,0.1", "--steps", "2", "--restarts", "1", "--n-examples", "30", "--out", str(tmp_path / "out")]
    assert main(argv) == 1
    printed = " ".join(capsys.readouterr().out.split())
    assert "2 learner(s) skipped" in printed and "unknown learner 'no-such'" in printed and "boom" in printed
    assert set(pd.read_csv(tmp_path / "out" / "results.csv")["label"]) == {"plainenc:Features"}  # the rest completed


def test_a_plain_module_plugin_is_listed_benchmarked_and_never_trained(site, tmp_path, capsys):
    install(site, "plainplug", "[robrep.encoders]\ngauss = plainenc:Gaussian\nbuilt = plainenc:make_features\n",
            {"plainenc": PLAINENC})
    reload_all()
    assert main(["list"]) == 0
    listed = capsys.readouterr().out
    assert "gauss" in listed and "plainplug 0.1.0" in listed and "encoder" in listed
    assert main(["bench", "--learner", "gauss", "--learner", "built", "--radii", "0,0.1", "--steps", "2",
                 "--restarts", "1", "--n-examples", "30", "--out", str(tmp_path / "b")]) == 0
    df = pd.read_csv(tmp_path / "b" / "results.csv")
    assert set(df["learner"]) == {"gauss", "built"} and sound(df)
    source = df[df["learner"] == "gauss"]["source"].iloc[0]
    assert source == "entry point robrep.encoders:gauss = plainenc:Gaussian (plainplug 0.1.0)"
    assert main(["train", "--learner", "gauss"]) == 2
    assert "plain encoder" in " ".join(capsys.readouterr().out.split())


LEARNER_PLUGIN = """
    from dataclasses import dataclass
    import torch
    from torch import nn

    @dataclass
    class Config:
        shape: tuple = (1, 28, 28)
        latent_dim: int = 8

    class Proj(nn.Module):
        '''A robrep learner fitted in closed form: the mean image and random directions.'''
        config_class = Config

        def __init__(self, config=None):
            super().__init__()
            self.config = config or Config()
            self.register_buffer("mean", torch.zeros(784))
            self.register_buffer("w", torch.zeros(784, self.config.latent_dim))

        def fit(self, images, seed=0):
            assert images.dtype == torch.float32 and 0 <= images.min() and images.max() <= 1, images.dtype
            assert images.max() > 0.5  # real digits in [0, 1], not uint8 pixels divided twice
            self.mean.copy_(images.flatten(1).mean(0))
            self.w.copy_(torch.randn(784, self.config.latent_dim, generator=torch.Generator().manual_seed(seed)))

        def encode(self, x):
            mu = (x.flatten(1) - self.mean) @ self.w
            return mu, torch.zeros_like(mu)
"""


def test_closed_form_fit_gets_floats_and_changed_code_is_never_served_a_stale_checkpoint(site, tmp_path,
                                                                                          monkeypatch):
    train_mod = importlib.import_module("robrep.train")  # the module (robrep.train is also the function)
    real_train, fitted = train_mod.train, []

    def counting_train(*args, **kwargs):
        fitted.append(args[0])
        return real_train(*args, **kwargs)

    monkeypatch.setattr(train_mod, "train", counting_train)

    def checkpoint_after(version: str, code: str = LEARNER_PLUGIN) -> str:
        install(site, "projplug", "[robrep.encoders]\nproj = projmod:Proj\n", {"projmod": code}, version=version)
        reload_all()
        df = bench(out=str(tmp_path / f"run{len(fitted)}-{version}"), learners=["proj"], **SMALL)  # fit checks inputs
        assert df["source"].iloc[0] == f"entry point robrep.encoders:proj = projmod:Proj (projplug {version})"
        return df["checkpoint"].iloc[0]

    first = checkpoint_after("0.1.0")
    assert checkpoint_after("0.1.0") == first and fitted == ["proj"]  # the same code: the cache is reused
    bumped = checkpoint_after("0.2.0")
    edited = checkpoint_after("0.2.0", LEARNER_PLUGIN + "\n# an edit without a version bump\n")
    assert len({first, bumped, edited}) == 3 and len(fitted) == 3
    meta = json.loads((Path(edited) / "config.json").read_text())
    assert meta["code"]["package"] == "projplug 0.2.0" and meta["source"].endswith("(projplug 0.2.0)")


@pytest.fixture
def vae_checkpoint(mnist5k, tmp_path):
    path = tmp_path / "vae"
    robrep.train("vae", mnist5k, out=path, max_steps=3)
    return path


def _rewrite(path, **changes):
    meta = json.loads((path / "config.json").read_text())
    for key, value in changes.items():
        if key == "beta":
            meta["config"]["beta"] = value
        else:
            meta[key] = value
    (path / "config.json").write_text(json.dumps(meta, indent=2))
    return meta


@pytest.mark.parametrize("edit", [dict(learner="beta-vae", beta=1000.0), dict(sha256="0" * 64),
                                  dict(seed=7)], ids=["renamed-learner", "weights-hash", "seed"])
def test_an_edited_checkpoint_config_is_detected(vae_checkpoint, tmp_path, edit):
    _rewrite(vae_checkpoint, **edit)
    with pytest.raises(CheckpointError, match="was edited after it was saved"):
        robrep.load(vae_checkpoint)
    df = bench(out=str(tmp_path / "b"), learners=[str(vae_checkpoint), "vae"], epochs=1, strict=False, **SMALL)
    assert set(df["learner"]) == {"vae"} and set(df["label"]) == {"vae"}  # the checkpoint was skipped
    assert "was edited after it was saved" in df.attrs["skipped"][0]["error"]


def test_damaged_weights_whose_hashes_match_are_skipped_not_a_traceback(vae_checkpoint, tmp_path):
    from robrep.checkpoint import _record_hash

    garbage = b"not a safetensors file at all"
    (vae_checkpoint / "model.safetensors").write_bytes(garbage)
    meta = _rewrite(vae_checkpoint, sha256=sha256_bytes(garbage))
    meta["checkpoint_sha256"] = _record_hash(meta)  # every recorded hash matches the damaged file
    (vae_checkpoint / "config.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="not a valid safetensors file"):
        robrep.load(vae_checkpoint)
    with pytest.raises(LearnerError, match="learner 'vae' .*not a valid safetensors file"):
        bench(out=str(tmp_path / "b"), learners=[str(vae_checkpoint)], **SMALL)


def test_a_checkpoint_from_before_config_hashes_is_refused_with_the_reason(vae_checkpoint):
    meta = json.loads((vae_checkpoint / "config.json").read_text())
    del meta["checkpoint_sha256"]
    (vae_checkpoint / "config.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match=r"lacks the key\(s\) checkpoint_sha256 \(it was saved by robrep < 0.2.0"):
        robrep.load(vae_checkpoint)


def test_robrep_learner_instances_are_benchmarked_as_they_are(vae_checkpoint, tmp_path, monkeypatch):
    train_mod = importlib.import_module("robrep.train")  # the module (robrep.train is also the function)
    monkeypatch.setattr(train_mod, "_gradient_training", lambda *a, **k: pytest.fail("trained a handed object"))
    loaded = robrep.load(vae_checkpoint)
    df = bench(out=str(tmp_path / "out"), learners=[loaded], **SMALL)
    meta = json.loads((vae_checkpoint / "config.json").read_text())
    assert df["encoder_sha256"].iloc[0] == meta["sha256"] and set(df["learner"]) == {"vae"}
    assert json.loads(df["learner_config"].iloc[0])["output"] == "encode"
