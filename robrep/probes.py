"""Frozen encoders and linear probes on their representation (method.md section 6, steps 1-2)."""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from robrep.encoders.adapter import as_encoder, freeze


@torch.no_grad()
def features(encoder: nn.Module, images: torch.Tensor, batch_size: int = 1000, device=None) -> torch.Tensor:
    """The representation (an encoder's mean mu(x), or its output; see ``robrep.encoders.Encoder``) of uint8
    (N, C, H, W) images, computed in batches. (N, d) float32 on ``device``."""
    encoder = as_encoder(encoder)
    if device is None:
        tensors = [*encoder.parameters(), *encoder.buffers()]
        device = tensors[0].device if tensors else torch.device("cpu")
    out = [encoder(images[i:i + batch_size].to(device).float().div_(255.0))
           for i in range(0, images.shape[0], batch_size)]
    return torch.cat(out)


PROBE_BITS = 10  # a probe's weights are rounded to 2^-10 of the largest weight of their tensor
# How ``train_probe`` fits, recorded with every saved probe: a probe fitted another way is never reused.
PROBE_FIT = f"L-BFGS float64, L2 1e-4 on raw W and b, rounded to 2^-{PROBE_BITS} (robrep 2026-12-01)"


def train_probe(
    feats: torch.Tensor, labels: torch.Tensor, n_classes: int, *, weight_decay: float = 1e-4, max_iter: int = 3000
) -> nn.Linear:
    """Multinomial logistic regression on fixed features (binary tasks as 2 classes), no adversarial training.

    The mean cross-entropy plus a small L2 penalty on W and b, minimised by full-batch L-BFGS in float64 (on
    standardised features, for conditioning; the objective is the raw one), converged tightly, then rounded (``round_probe``) and returned in float32. Features computed on another machine or with
    another number of threads differ in their last float32 bits; the float64 fit moves far less than the
    rounding grain, so the same probe comes back, byte for byte (tests/test_reproduce.py).
    """
    device = feats.device
    raw, labels = feats.detach().double(), labels.to(device)
    if labels.min() < 0 or labels.max() >= n_classes:
        raise ValueError(f"labels must lie in [0, {n_classes}), got [{labels.min()}, {labels.max()}]")
    # optimised on standardised features (better conditioned), but the penalty is on the raw weights and bias:
    # the objective is the raw one (a penalty on the standardised weights would be far weaker on a representation
    # of small variance, and the probe far less smooth)
    mean, scale = raw.mean(0), raw.std(0).clamp_min(1e-12)
    feats = (raw - mean) / scale
    probe = nn.Linear(feats.shape[1], n_classes).to(device=device, dtype=torch.float64)
    nn.init.zeros_(probe.weight)
    nn.init.zeros_(probe.bias)
    opt = torch.optim.LBFGS(probe.parameters(), lr=1, max_iter=max_iter, tolerance_grad=1e-12,
                            tolerance_change=1e-16, history_size=50, line_search_fn="strong_wolfe")

    def raw_params():  # W x + b on the raw features: W = W_s / scale, b = b_s - W mean
        weight = probe.weight / scale
        return weight, probe.bias - weight @ mean

    def closure():  # the bias is penalised too: softmax is shift invariant, so only then is the optimum unique
        opt.zero_grad()
        weight, bias = raw_params()
        penalty = weight.pow(2).sum() + bias.pow(2).sum()
        loss = F.cross_entropy(probe(feats), labels) + 0.5 * weight_decay * penalty
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    with torch.no_grad():
        weight, bias = raw_params()
        probe.weight.copy_(weight)
        probe.bias.copy_(bias)
    return round_probe(probe).float().eval()


@torch.no_grad()
def round_probe(probe: nn.Linear, bits: int = PROBE_BITS) -> nn.Linear:
    """Each parameter rounded to a power-of-two grain, 2^-bits of its largest magnitude (exact in float32);
    frozen."""
    for p in probe.parameters():
        top = p.abs().max().item()
        if top > 0:
            grain = 2.0 ** (torch.tensor(top).log2().floor().item() - bits)
            p.copy_(torch.round(p / grain) * grain)
        p.requires_grad_(False)
    return probe


def save_probe(probe: nn.Linear, path) -> str:
    """Write ``probe`` as safetensors (atomically); returns the SHA-256 of the bytes written."""
    from robrep.checkpoint import atomic_write, sha256_bytes, state_bytes

    data = state_bytes(probe)
    atomic_write(Path(path), data)
    return sha256_bytes(data)


def load_probe(data: bytes) -> nn.Linear:
    """A probe from the safetensors bytes ``save_probe`` wrote: frozen, eval mode, on the CPU."""
    from safetensors.torch import load as st_load

    state = st_load(data)
    probe = nn.Linear(state["weight"].shape[1], state["weight"].shape[0])
    probe.load_state_dict(state)
    for p in probe.parameters():
        p.requires_grad_(False)
    return probe.eval()


# What a probe was fitted for and what it is: written next to its weights, so any process that attacks with
# it (a resumed run, another rank) uses the same bytes and the same recorded facts.
PROBE_FACTS = ("encoder_sha256", "dataset", "task", "label_fraction", "seed", "fit", "probe_sha256", "n_probe_labels",
               "probe_train_accuracy")
ASKED = PROBE_FACTS[:6]  # what a probe must have been fitted for (and how) to be reused


def probe_file(out, run: str, dataset: str, task: str, label_fraction: float) -> Path:
    """Where a bench saves the probe of a run's task in its output folder ``out`` (its record: ``record_path``)."""
    suffix = "" if label_fraction == 1 else f"-labels{label_fraction:g}"
    return Path(out) / "probes" / run / f"{dataset}-{task}{suffix}.safetensors"


def record_path(path) -> Path:
    return Path(path).with_suffix(".json")


def write_probe_record(path, facts: dict) -> None:
    """Record (atomically) what the probe at ``path`` was fitted for and what it is (``PROBE_FACTS``)."""
    import json

    from robrep.checkpoint import atomic_write

    atomic_write(record_path(path), json.dumps({k: facts[k] for k in PROBE_FACTS}, sort_keys=True).encode())


def read_probe(path, asked: dict) -> tuple[nn.Linear, dict] | None:
    """The probe saved at ``path`` and its record, if the record says it was fitted for ``asked`` (encoder
    SHA-256, data set, task, label fraction, seed) and the file's bytes have the SHA-256 it records;
    otherwise None (the probe must be fitted)."""
    import json

    from robrep.checkpoint import sha256_bytes

    path = Path(path)
    try:
        facts = json.loads(record_path(path).read_text(encoding="utf-8"))
        data = path.read_bytes()
    except (OSError, ValueError):
        return None
    if not isinstance(facts, dict) or any(facts.get(k) != asked[k] for k in ASKED):
        return None
    if sha256_bytes(data) != facts.get("probe_sha256"):
        return None
    return load_probe(data), facts


class ProbedEncoder(nn.Module):
    """x -> W f(x) + b, f(x) the encoder's representation: the composition that is attacked.
    Returns (N, n_classes) logits. ``encoder``: a ``robrep.encoders.Encoder``, or any module it wraps."""

    def __init__(self, encoder: nn.Module, probe: nn.Linear):
        super().__init__()
        self.encoder, self.probe = freeze(as_encoder(encoder)), probe.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.probe(self.encoder(x))

    def predict(self, x: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
        from robrep.attacks.base import predict

        return predict(self.eval(), x, batch_size)
