"""A cell's rows as the harness builds them: the encoder's fields, the attack's, each radius's results and
checks, and when."""
from __future__ import annotations

import json
from typing import Any

import pandas as pd
import torch

from robrep.attacks import Attack
from robrep.attacks.cascade import is_chained
from robrep.io import short_hash
from robrep.rows.layout import is_false, passed


def encoder_row(*, learner: str, label: str, run: str, checkpoint: str, source: str, learner_config: dict,
                arch: str, dataset: str, task: str, n_classes: int, n_examples: int, label_fraction: float,
                n_probe_labels: int, seed: int, encoder_sha256: str, probe_sha256: str,
                probe_train_accuracy: float, device: str, train_seconds: float | None = None,
                probe: str = "standard") -> dict[str, Any]:
    """The fields every row of one encoder, task and probe shares (what was attacked, and its provenance, down
    to the machine and the number of threads that computed it; ``train_seconds``: how long the encoder's
    training took, as its checkpoint records, on whatever machine trained it; empty for encoders robrep did
    not train)."""
    from robrep._version import __version__
    from robrep.provenance import machine

    return {
        "learner": learner, "label": label, "run": run, "checkpoint": checkpoint, "source": source,
        "learner_config": json.dumps(learner_config, sort_keys=True), "arch": arch, "dataset": dataset,
        "task": task, "n_classes": n_classes, "n_examples": n_examples, "label_fraction": label_fraction,
        "n_probe_labels": n_probe_labels, "probe": probe, "seed": seed, "encoder_sha256": encoder_sha256,
        "probe_sha256": probe_sha256, "probe_train_accuracy": probe_train_accuracy,
        "robrep_version": __version__, "torch_version": torch.__version__, "device": device,
        "machine": machine(device), "threads": torch.get_num_threads(), "train_seconds": train_seconds,
    }


def attack_cell(base: dict, attack: Attack, after: dict | None = None) -> dict:
    """The fields of a cell's rows that say which attack ran, with what budget, on top of ``base``. ``after``:
    in a cascade, the attacks before it (``task_cells``), part of its config: it attacks only their survivors."""
    config = attack.settings() if after is None else {**attack.settings(), "cascade_after": after}
    return {**base, "suite": attack.suite, "attack": attack.name, "attack_config": json.dumps(config, sort_keys=True),
            "norm": attack.norm, "protocol": "per-attack" if after is None else "cascade", **attack.budget()}


def task_cells(base: dict, attacks: list[Attack], cascade: bool) -> list[dict]:
    """The cells of a task's attacks: each on every point (``cascade`` False, or a single attack), or as the
    stages of a cascade, each naming the attacks before it and a hash of their configs."""
    if not is_chained(cascade, attacks):
        return [attack_cell(base, a) for a in attacks]
    configs = [json.dumps(a.settings(), sort_keys=True) for a in attacks]
    return [attack_cell(base, a, {"attacks": [b.qualname for b in attacks[:k]],
                                  "sha": short_hash(configs[:k])})
            for k, a in enumerate(attacks)]


def result_rows(res, checks: dict[float, dict[str, Any]]) -> list[dict[str, Any]]:
    """One partial row per radius of an ``AttackResult`` and its checks (no provenance: ``cell_rows`` adds it)."""
    nominal = res.clean_correct.float().mean().item()
    return [{"radius": r, "nominal_accuracy": nominal, "adversarial_accuracy": res.accuracy(r),
             "n_attacked": res.attacked[r], **checks[r], "checks_passed": passed(checks[r]),
             "warnings": "; ".join(check_warnings(checks[r])), "wall_seconds": res.wall_seconds} for r in res.radii]


def check_warnings(checks: dict[str, Any]) -> list[str]:
    """What a row's failed checks mean, in words."""
    out = []
    if is_false(checks.get("check_noise_floor")):
        out.append(f"weaker than random noise in the ball (noise accuracy {checks['noise_accuracy']:.3f}): "
                   "the attack is broken")
    if is_false(checks.get("check_converged")) and checks.get("suite") == "worst-case":
        out.append(f"not converged: {checks['late_share']:.3f} of test points were broken only late (last fifth of "
                   "the model calls or last restart) by every attack that broke them; more steps or restarts would "
                   "change the answer")
    elif is_false(checks.get("check_converged")):
        out.append(f"not converged: {checks['late_share']:.3f} of test points first broken in the last fifth "
                   f"of the attack, {checks.get('last_restart_share') or 0:.3f} in its last restart; more steps or "
                   "restarts would change the answer")
    if is_false(checks.get("check_explored")):
        out.append(f"only {checks['explored_share']:.3f} of robust points were explored to half the radius: "
                   "the attack barely moved")
    if is_false(checks.get("check_guards")):
        out.append(f"{checks['n_rejected']} returned inputs rejected by the guards")
    if is_false(checks.get("check_consistent")):
        out.append("re-computed decisions differ from the reported ones: the model is not deterministic")
    return out


def cell_rows(cell: dict[str, Any], partial: list[dict[str, Any]], timestamp: str) -> pd.DataFrame:
    """A finished cell's rows: its fields, each radius's results, when."""
    return pd.DataFrame([{**cell, **r, "timestamp": timestamp} for r in partial])
