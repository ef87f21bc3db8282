"""What moves between machines and thread counts, and what must not: the probe is fitted in float64 and
rounded, so features that differ in their last float32 bits give the same probe, byte for byte."""
import torch

from robrep.checkpoint import state_bytes
from robrep.io import sha256_bytes
from robrep.probes import features, train_probe


def _probe_sha(feats, labels):
    return sha256_bytes(state_bytes(train_probe(feats, labels, 10)))


def test_the_probe_is_the_same_with_one_thread_or_two_and_under_last_bit_noise(undefended, mnist5k):
    model, _, _ = undefended
    images, labels = mnist5k.train.images[:2000], mnist5k.train.labels["digit"][:2000]
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = features(model.encoder, images)
        sha_one = _probe_sha(one, labels)
        torch.set_num_threads(2)
        two = features(model.encoder, images, batch_size=333)  # another batching: other summation orders
        sha_two = _probe_sha(two, labels)
    finally:
        torch.set_num_threads(threads)
    assert sha_one == sha_two
    # what another machine's float32 kernels do to features: relative changes of a few ulps
    gen = torch.Generator().manual_seed(0)
    jitter = one * (1 + 4e-7 * torch.randn(one.shape, generator=gen))
    assert not torch.equal(jitter, one)
    assert _probe_sha(jitter, labels) == sha_one


def test_without_rounding_the_same_jitter_changes_the_probe(undefended, mnist5k):
    """The check above can fail: the unrounded float64 fit does move under the jitter."""
    model, _, _ = undefended
    feats = features(model.encoder, mnist5k.train.images[:2000])
    labels = mnist5k.train.labels["digit"][:2000]
    gen = torch.Generator().manual_seed(0)
    jitter = feats * (1 + 4e-7 * torch.randn(feats.shape, generator=gen))
    from robrep import probes

    real = probes.round_probe
    try:
        probes.round_probe = lambda p, bits=0: p.requires_grad_(False)
        a, b = train_probe(feats, labels, 10), train_probe(jitter, labels, 10)
    finally:
        probes.round_probe = real
    assert not torch.equal(a.weight, b.weight)


def test_the_probe_minimises_the_raw_objective(undefended, mnist5k):
    """Standardising the features is only for conditioning: the penalty is on the raw weights (a penalty on
    standardised weights is far weaker on a representation of small variance and makes the probe less smooth)."""
    import torch.nn.functional as F

    model, _, _ = undefended
    feats = features(model.encoder, mnist5k.train.images[:2000]) * 0.05  # a representation of small variance
    labels = mnist5k.train.labels["digit"][:2000]

    def objective(w, b):
        w, b = w.double(), b.double()
        return (F.cross_entropy(feats.double() @ w.T + b, labels) + 0.5e-4 * (w.pow(2).sum() + b.pow(2).sum())).item()

    probe = train_probe(feats, labels, 10)
    plain = torch.zeros(10, feats.shape[1], dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(10, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([plain, bias], max_iter=3000, tolerance_grad=1e-12, tolerance_change=1e-16,
                            history_size=50, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(feats.double() @ plain.T + bias, labels) + 0.5e-4 * (plain.pow(2).sum() + bias.pow(2).sum())
        loss.backward()
        return loss

    opt.step(closure)
    reference = objective(plain.detach(), bias.detach())
    assert objective(probe.weight, probe.bias) <= reference + 1e-4
    assert (probe.weight.double() - plain.detach()).abs().max() <= 0.01 * plain.detach().abs().max()


def test_a_probe_fitted_another_way_is_not_reused(tmp_path):
    from robrep.probes import PROBE_FIT, read_probe, save_probe, write_probe_record

    probe = train_probe(torch.randn(200, 4, generator=torch.Generator().manual_seed(0)), torch.arange(200) % 3, 3)
    path = tmp_path / "p.safetensors"
    asked = {"encoder_sha256": "a" * 64, "dataset": "d", "task": "t", "label_fraction": 1.0, "seed": 0, "fit": PROBE_FIT}
    facts = {**asked, "probe_sha256": save_probe(probe, path), "n_probe_labels": 200, "probe_train_accuracy": 0.5}
    write_probe_record(path, facts)
    assert read_probe(path, asked) is not None
    write_probe_record(path, {**facts, "fit": "L-BFGS float32, 500 iterations"})  # an older fit
    assert read_probe(path, asked) is None
