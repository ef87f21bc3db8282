"""The CUDA paths (skipped where there is no GPU; ``benchmarks/gpu_check.sh`` runs them on one): the bench, an
adversarial probe, the certifier and randomized smoothing on ``cuda`` give what they give on the CPU, up to the
noise of other kernels."""
import pytest
import torch

import robrep

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")

SMALL = dict(learners=("vae",), epochs=1, n_examples=100, radii=(0.0, 0.05, 0.1), steps=10, restarts=2)


@pytest.fixture(scope="module")
def both(tmp_path_factory):
    """The same small bench on the CPU and on the GPU, each with its own cache."""
    out = {}
    for device in ("cpu", "cuda"):
        base = tmp_path_factory.mktemp(device)
        mp = pytest.MonkeyPatch()
        mp.setenv("ROBREP_CACHE", str(base / "cache"))
        out[device] = robrep.bench(**SMALL, device=device, out=str(base / "run"))
        mp.undo()
    return out


def test_the_bench_on_a_gpu_gives_the_cpus_numbers(both):
    cpu, gpu = (both[d].sort_values(["suite", "attack", "radius"]).reset_index(drop=True) for d in ("cpu", "cuda"))
    assert len(cpu) == len(gpu) and (gpu["device"].str.startswith("cuda")).all()
    # training on another device is another float order: the encoders differ a little, the numbers too
    assert (cpu["adversarial_accuracy"] - gpu["adversarial_accuracy"]).abs().max() <= 0.1
    assert (gpu[gpu["radius"] > 0]["adversarial_accuracy"] < gpu[gpu["radius"] == 0]["adversarial_accuracy"].max()).all()


def test_the_certifier_and_smoothing_run_on_a_gpu(mnist5k):
    from robrep.certify import certified
    from robrep.certify.smoothing import certify_smoothed
    from robrep.probes import ProbedEncoder, features, train_probe

    torch.manual_seed(0)
    learner = robrep.train("vae", mnist5k, out=False, max_steps=200)
    probe = train_probe(features(learner, mnist5k.train.images), mnist5k.train.labels["digit"], 10)
    model = ProbedEncoder(learner, probe)
    x, y = mnist5k.test.batch(slice(0, 50)), mnist5k.test.labels["digit"][:50]
    on_cpu = certified(model, x, y, 0.02)
    on_gpu = certified(model.to("cuda"), x.cuda(), y.cuda(), 0.02).cpu()
    assert (on_cpu == on_gpu).float().mean() >= 0.96  # float64 on both: equal but for ties at zero
    s = certify_smoothed(model, x.cuda(), 0.25, n0=20, n=200, alpha=0.01)
    assert s.accuracy(y, 0.0) > 0.3


def test_an_adversarial_probe_trains_on_a_gpu(tmp_path, monkeypatch):
    monkeypatch.setenv("ROBREP_CACHE", str(tmp_path / "cache"))
    rows = robrep.bench(**SMALL, device="cuda", probe="adversarial", out=str(tmp_path / "run"))
    assert (rows["probe"] != "standard").all() and rows["adversarial_accuracy"].notna().all()


@pytest.mark.parametrize("norm,eps", [("linf", 0.05), ("l2", 0.3)])
def test_convolutions_are_bounded_in_patches_on_a_gpu_as_on_the_cpu(norm, eps):
    from torch import nn

    from robrep.certify import lower_margins
    from robrep.encoders import Encoder
    from robrep.probes import ProbedEncoder

    torch.manual_seed(0)
    body = [nn.Conv2d(1, 4, 4, 2, 1), nn.ReLU(), nn.Conv2d(4, 6, 4, 2, 1), nn.ReLU(), nn.Flatten(), nn.Linear(6 * 7 * 7, 8)]
    model = ProbedEncoder(Encoder(nn.Sequential(*body)), nn.Linear(8, 5))
    x = torch.rand(6, 1, 28, 28)
    y = model(x).argmax(1)
    on_cpu = lower_margins(model, x, y, eps, norm)
    on_gpu = lower_margins(model.to("cuda"), x.cuda(), y.cuda(), eps, norm).cpu()
    finite = torch.isfinite(on_cpu)
    assert torch.allclose(on_cpu[finite], on_gpu[finite], atol=1e-6)


@pytest.mark.parametrize("name", ["native/APGD-T", "native/FAB-T"])
def test_the_batched_targeted_attacks_on_a_gpu_break_what_they_break_on_the_cpu(name, undefended):
    """robrep's APGD-T and FAB-T (every target of a point in one batch: the GPU's case) on the same model and points:
    the same decisions up to the noise of other kernels."""
    import copy

    from robrep.attacks import ATTACKS

    model, x, y = undefended
    x, y = x[:100], y[:100]
    attack = ATTACKS.create(name, 10, steps=20)
    on_cpu = attack.run(model, x, y, [0.0, 0.05], seed=0).robust[0.05]
    gpu_model = copy.deepcopy(model).to("cuda")
    on_gpu = attack.run(gpu_model, x.cuda(), y.cuda(), [0.0, 0.05], seed=0).robust[0.05].cpu()
    assert 0 < int((~on_cpu).sum()) < len(x)
    assert (on_cpu == on_gpu).float().mean() >= 0.97


def test_stacked_tasks_on_a_gpu_get_what_they_get_alone_there(undefended, mnist5k):
    """The tasks of one encoder stacked into one pass on the GPU (``robrep bench --stack-tasks``' case): each task
    the same points as attacked alone on the GPU, and near what the CPU gives."""
    import copy

    from robrep.attacks.pgd import PGD
    from robrep.attacks.stacked import Cell, run_stacked
    from robrep.probes import ProbedEncoder, features, train_probe

    model, x, y = undefended
    encoder = copy.deepcopy(model.encoder).to("cuda")
    feats = features(encoder, mnist5k.train.images.cuda())
    labels = mnist5k.train.labels["digit"].cuda()
    x, y = x.cuda(), y.cuda()
    cells = [Cell(ProbedEncoder(encoder, train_probe(feats, f(labels), k)), x, f(y))
             for f, k in ((lambda v: v, 10), (lambda v: (v >= 5).long(), 2), (lambda v: v % 3, 3))]
    attack = PGD(steps=20, restarts=2)
    alone = [attack.run(c.model, c.x, c.y, [0.0, 0.05], seed=0) for c in cells]
    stacked = run_stacked(attack, cells, [0.0, 0.05], seed=0)
    for a, b in zip(alone, stacked):
        assert 0 < int((~a.robust[0.05]).sum()) < len(x)
        assert (a.robust[0.05] == b.robust[0.05]).float().mean() >= 0.99
