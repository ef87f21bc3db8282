"""Every registered learner gets the same checks (registry-driven, as in timm's tests)."""
import dataclasses

import pytest
import torch

import robrep
from robrep.checkpoint import CheckpointError
from robrep.learners import create_learner, list_learners
from robrep.registry import LEARNERS, UnknownNameError

FAST = {"selection_steps": 3}  # keeps the adversarial learner quick in tests
BUILT_IN = [n for n in list_learners() if LEARNERS.origin(n) == "built-in"]  # plugins get the contract check instead


def make(name, **kw):
    fields = {f.name for f in dataclasses.fields(LEARNERS.get(name).config_class)}
    return create_learner(name, **{k: v for k, v in {**FAST, **kw}.items() if k in fields})


GRADIENT_TRAINED = [n for n in BUILT_IN if not callable(getattr(LEARNERS.get(n), "fit", None))]


def loss_of(learner, x, labels=None):
    """The learner's loss on x; a learner that trains on labels is told them first (``prepare``, as
    robrep.train does) and given the minibatch's indices."""
    if not callable(getattr(learner, "prepare", None)):
        return learner.loss(x)
    if labels is None:
        labels = {"digit": torch.arange(len(x)) % 10, "color": torch.arange(len(x)) % 2}
    learner.prepare(x, labels)
    if getattr(learner, "wants_index", False):
        return learner.loss(x, index=torch.arange(len(x)))
    return learner.loss(x)


def test_the_four_learners_of_the_paper_are_registered():
    assert {"vae", "beta-vae", "se-random", "se-adversarial"} <= set(list_learners())
    assert list_learners("se-*") == ["se-adversarial", "se-fgsm", "se-random", "se-warm"]


@pytest.mark.parametrize("arch,shape", [("mlp", (1, 28, 28)), ("conv", (1, 28, 28)), ("conv", (3, 28, 28)), ("conv", (3, 64, 64)), ("mlp", (3, 64, 64))])
@pytest.mark.parametrize("name", GRADIENT_TRAINED)
def test_forward_and_backward_reach_every_parameter(name, arch, shape):
    torch.manual_seed(0)
    learner = make(name, arch=arch, shape=shape, latent_dim=8)
    x = torch.rand(4, *shape)
    mu, logvar = learner.encode(x)
    assert mu.shape == (4, 8) and logvar.shape == (4, 8)
    parts = loss_of(learner, x)
    assert parts["loss"].dim() == 0 and torch.isfinite(parts["loss"])
    assert len(parts) >= 2 and ("recon" in parts or not callable(getattr(learner, "decode", None)))
    parts["loss"].backward()
    for pname, p in learner.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, f"{name}: no gradient reached {pname}"


@pytest.mark.parametrize("name", GRADIENT_TRAINED)
def test_a_few_training_steps_lower_the_loss_on_mnist5k(name, mnist5k):
    torch.manual_seed(0)
    learner = make(name)
    x = mnist5k.train.batch(slice(0, 256))
    labels = {t: y[:256] for t, y in mnist5k.train.labels.items()}
    opt = torch.optim.Adam(learner.parameters(), lr=learner.config.lr)

    def evaluate():
        torch.manual_seed(123)  # same noise and same random selection start before and after
        with torch.no_grad():
            return loss_of(learner, x, labels)["loss"].item()

    before = evaluate()
    for _ in range(25):
        opt.zero_grad()
        loss_of(learner, x, labels)["loss"].backward()
        opt.step()
    after = evaluate()
    # a contrastive loss has a floor far from 0 (log of the negatives' count): a smaller share is a real drop
    share = 0.03 if name in ("simclr", "rocl") else 0.1
    assert after < before - share * abs(before), (before, after)


@pytest.mark.parametrize("name", BUILT_IN)
def test_save_load_round_trip_gives_identical_encodings(name, mnist5k, tmp_path):
    learner = robrep.train(name, mnist5k, out=tmp_path / name, max_steps=2, **FAST if name == "se-adversarial" else {})
    loaded = robrep.load(tmp_path / name)
    assert type(loaded) is type(learner) and loaded.config == learner.config
    x = mnist5k.test.batch(slice(0, 64))
    with torch.no_grad():
        a, b = learner.encode(x), loaded.encode(x)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert loaded.run_info["dataset"] == "mnist5k" and len(loaded.run_info["sha256"]) == 64
    assert not loaded.training


@pytest.mark.parametrize("start", ["random", "warm"])
def test_a_config_records_a_later_field_only_away_from_its_earlier_value(start, mnist5k, tmp_path):
    """selection_start came after runs were published: at "random", the value every earlier SE
    had, it is left out of config.json (and of the run id that hashes it), and a checkpoint without it loads
    as random; "warm" is recorded."""
    import json

    learner = robrep.train("se-adversarial", mnist5k, out=tmp_path / start, max_steps=1, selection_steps=2,
                           selection_start=start)
    recorded = json.loads((tmp_path / start / "config.json").read_text())["config"]
    assert ("selection_start" in recorded) == (start == "warm")
    assert recorded.get("selection_start", "random") == start
    loaded = robrep.load(tmp_path / start)
    assert loaded.config == learner.config and loaded.config.selection_start == start


@pytest.mark.parametrize("se", ["se-random", "se-adversarial"])
def test_smooth_encoder_decoder_gradient_equals_the_vae_one(se):
    torch.manual_seed(0)
    vae, smooth = make("vae"), make(se)
    smooth.load_state_dict(vae.state_dict())
    x = torch.rand(16, 1, 28, 28)
    noise = torch.randn(16, vae.config.latent_dim)
    vae.loss(x, noise=noise)["loss"].backward()
    smooth.loss(x, noise=noise)["loss"].backward()
    for (n, p), q in zip(vae.decoder.named_parameters(), smooth.decoder.parameters()):
        assert torch.equal(p.grad, q.grad), n
    # ... while the encoder gradients differ: the SE regulariser acts on the encoder only
    assert not torch.equal(vae.encoder.head.weight.grad, smooth.encoder.head.weight.grad)


def test_beta_vae_with_beta_one_is_the_vae():
    torch.manual_seed(0)
    vae, beta = make("vae"), make("beta-vae", beta=1.0)
    beta.load_state_dict(vae.state_dict())
    x, noise = torch.rand(8, 1, 28, 28), torch.randn(8, 32)
    assert vae.loss(x, noise)["loss"].item() == pytest.approx(beta.loss(x, noise)["loss"].item())
    assert make("beta-vae").config.beta == 4.0


def test_configs_reject_bad_values_with_a_clear_message():
    with pytest.raises(ValueError, match="no config field.*gamma"):
        create_learner("vae", gamma=3)
    with pytest.raises(ValueError, match="arch must be one of"):
        create_learner("vae", arch="transformer")
    with pytest.raises(UnknownNameError, match="known learners: .*beta-vae"):
        create_learner("pca")
    with pytest.raises(ValueError, match=r"expects inputs of shape \(N, 1, 28, 28\)"):
        create_learner("vae").encode(torch.rand(2, 3, 28, 28))


def test_corrupted_or_missing_checkpoint_is_rejected(mnist5k, tmp_path):
    robrep.train("vae", mnist5k, out=tmp_path / "ck", max_steps=1)
    with pytest.raises(CheckpointError, match="expected a folder holding model.safetensors"):
        robrep.load(tmp_path / "missing")
    weights = tmp_path / "ck" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-10] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="SHA-256"):
        robrep.load(tmp_path / "ck")


def test_training_is_reproducible_with_the_same_seed(mnist5k):
    a = robrep.train("vae", mnist5k, out=False, max_steps=3, seed=7)
    b = robrep.train("vae", mnist5k, out=False, max_steps=3, seed=7)
    x = mnist5k.test.batch(slice(0, 8))
    assert torch.equal(a.encode(x)[0], b.encode(x)[0])
