"""``BenchConfig``: a whole experiment, typed and validated once, before any data is loaded or anything trained.

Every value, from TOML, the command line or Python, is checked for type and range with a
message that names the key and says what was expected (``robrep.validate``). Names are
checked against the registries (learners when the bench resolves them, with their configs).
"""
from __future__ import annotations

import dataclasses
import math
import os
import time
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch

from robrep.encoders import Preprocessing
from robrep.encoders.contract import ContractError
from robrep.validate import ConfigError, check_fields

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

DEFAULT_LEARNERS = ("vae", "beta-vae", "se-random", "se-adversarial")
NORMS = ("linf", "l2")
ARCHS = ("mlp", "conv")


def _as_tuple(value) -> tuple:
    """A config list: a single string (or object) is one item, never a sequence of letters."""
    if value is None or isinstance(value, (str, bytes, Path, torch.nn.Module, type)) or callable(value):
        return (value,)
    if isinstance(value, (int, float)):  # radii = 0.1
        return (value,)
    return tuple(value)


WORST_CASE = ("cascade", "per-attack")
# named budgets: steps x restarts, which every attack's budget follows (robrep.attacks.suites.budgets);
# "paper" is the full protocol, AutoAttack at its published budgets
BUDGETS = {"quick": (10, 1), "standard": (50, 5), "paper": (100, 10)}
DEFAULT_N_EXAMPLES = 1000  # test points attacked by default: a cap (a smaller test split is attacked whole)


@dataclass
class BenchConfig:
    """A whole experiment. Every field can be set in a TOML file (``--config``) or on the command line."""

    # registered names, NAME:LABEL variants, checkpoint folders, "module:attr" specs; from Python also
    # nn.Module instances or classes, factories and robrep.Encoder objects (see robrep.encoders)
    learners: tuple = DEFAULT_LEARNERS
    learner_config: dict = field(default_factory=dict)  # per learner label: a table of config overrides
    # what encoders robrep does not train expect their inputs normalised with ("imagenet", "mean=... std=...",
    # or {mean, std}), unless their learner_config says otherwise; robrep learners take [0, 1]
    preprocessing: str | dict | None = None
    datasets: tuple[str, ...] = ("mnist5k",)
    tasks: tuple[str, ...] | None = None  # default: every task of each data set
    arch: str = "mlp"
    epochs: int | None = None  # default: each learner's config
    radii: tuple[float, ...] = (0.0, 0.05, 0.1, 0.15, 0.2)  # distinct, >= 0; at most 1 for L-inf; kept sorted
    norm: str = "linf"  # threat model: linf (every suite) or l2 (native suite only)
    suites: tuple[str, ...] = ("native",)  # native, torchattacks, foolbox, plugins (see `robrep list`)
    steps: int = 100
    restarts: int = 10
    budget: str | None = None  # a named budget (BUDGETS) instead of steps and restarts
    # how several attacks make the worst case: "cascade" (each attacks only the points every earlier one failed
    # on, robrep.attacks.cascade) or "per-attack" (every attack on every point, for diagnostics)
    worst_case: str = "cascade"
    n_examples: int | None = DEFAULT_N_EXAMPLES  # test points attacked (None: the whole test split)
    label_fraction: float = 1.0  # fraction of the training labels the probe sees (stratified; paper fig. 8)
    images: float | None = None  # write a grid of clean / adversarial images and reconstructions at this radius
    seed: int = 0
    device: str = "cpu"
    threads: int | None = None  # CPU threads (robrep.threads); None: as the process has them (the CLI chooses)
    out: str = "robrep-bench"
    data_root: str | None = None
    download: bool = False  # fetch a missing data set where that is possible (full MNIST)
    retrain: bool = False  # ignore cached checkpoints

    def __post_init__(self) -> None:
        for name in ("learners", "datasets", "radii", "suites"):
            setattr(self, name, _as_tuple(getattr(self, name)))
        if self.tasks is not None:
            self.tasks = _as_tuple(self.tasks)
        for key in ("out", "data_root"):  # paths are fine where strings are expected
            if isinstance(getattr(self, key), os.PathLike):
                setattr(self, key, os.fspath(getattr(self, key)))
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "learners"}
        for key, value in check_fields(type(self), values, "bench config").items():
            setattr(self, key, value)
        self._check_ranges()

    def _check_ranges(self) -> None:
        def bad(key: str, expected: str, value) -> ConfigError:
            return ConfigError(f"bench config: {key} must be {expected}, got {value!r}")

        if self.budget is not None:
            if self.budget not in BUDGETS:
                raise bad("budget", f"one of {', '.join(BUDGETS)}", self.budget)
            preset, default = BUDGETS[self.budget], (100, 10)
            if (self.steps, self.restarts) not in (preset, default):
                raise ConfigError(f"bench config: budget {self.budget!r} means steps x restarts = {preset[0]} x "
                                  f"{preset[1]}, but steps and restarts are {self.steps} x {self.restarts}: "
                                  "give the budget or the steps and restarts, not both")
            self.steps, self.restarts = preset

        if not self.learners:
            raise bad("learners", "at least one learner", self.learners)
        if any(isinstance(s, str) and not s.strip() for s in self.learners):
            raise bad("learners", "non-empty names", self.learners)
        for key in ("datasets", "radii", "suites"):
            if not getattr(self, key):
                raise bad(key, "a non-empty list", getattr(self, key))
        if not all(isinstance(v, dict) for v in self.learner_config.values()):
            raise bad("learner_config", "a table of tables (one per learner label)", self.learner_config)
        if self.norm not in NORMS:
            raise bad("norm", f"one of {', '.join(NORMS)}", self.norm)
        if self.arch not in ARCHS:
            raise bad("arch", f"one of {', '.join(ARCHS)}", self.arch)
        if len(set(self.radii)) != len(self.radii):
            raise bad("radii", "distinct", list(self.radii))
        if any(r < 0 for r in self.radii):
            raise bad("radii", "numbers >= 0", list(self.radii))
        if self.norm == "linf" and any(r > 1 for r in self.radii):
            raise bad("radii", "at most 1 for the L-inf threat model (inputs lie in [0, 1])", list(self.radii))
        self.radii = tuple(sorted(self.radii))
        if self.worst_case not in WORST_CASE:
            raise bad("worst_case", f"one of {', '.join(WORST_CASE)}", self.worst_case)
        for key in ("steps", "restarts"):
            if getattr(self, key) < 1:
                raise bad(key, "an integer >= 1", getattr(self, key))
        for key in ("epochs", "n_examples", "threads"):
            if getattr(self, key) is not None and getattr(self, key) < 1:
                raise bad(key, "an integer >= 1", getattr(self, key))
        if self.seed < 0:
            raise bad("seed", "an integer >= 0", self.seed)
        if not 0 < self.label_fraction <= 1:
            raise bad("label_fraction", "in (0, 1]", self.label_fraction)
        if self.images is not None and not (0 <= self.images and math.isfinite(self.images)):
            raise bad("images", "a radius >= 0", self.images)
        try:
            torch.device(self.device)
        except RuntimeError:
            raise bad("device", "cpu, cuda or cuda:N", self.device) from None
        try:
            Preprocessing.parse(self.preprocessing)  # a bad one is refused before any work
        except ContractError as e:
            raise ConfigError(f"bench config: preprocessing: {e}") from None
        if not self.out:
            raise bad("out", "a folder", self.out)

    def to_toml(self) -> str:
        """The config as a TOML file ``from_toml`` reads back: unset fields (None) are left out, as in a
        hand-written config. A learner given as a Python object (a module, a class, a factory, a
        ``robrep.Encoder``) is written as its name with a comment: it can be described, not re-created."""
        import tomli_w

        from robrep.provenance import qualified_name

        def clean(value):
            if isinstance(value, dict):
                return {str(k): clean(v) for k, v in value.items() if v is not None}
            if isinstance(value, (list, tuple)):
                return [clean(v) for v in value]
            if isinstance(value, os.PathLike):
                return os.fspath(value)
            return value

        objects = [spec for spec in self.learners if not isinstance(spec, (str, os.PathLike))]
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if getattr(self, f.name) is not None}
        data["learners"] = [spec if isinstance(spec, str) else os.fspath(spec) if isinstance(spec, os.PathLike)
                            else getattr(spec, "name", None) or qualified_name(spec) for spec in self.learners]
        from robrep._version import __version__

        head = (f"# the configuration this run resolved to (robrep bench --config reads it back); robrep {__version__}, "
                f"{time.strftime('%Y-%m-%dT%H:%M:%S%z')}\n")
        if objects:
            head += ("# learners given as Python objects, named here by their name or class: "
                     + ", ".join(getattr(o, "name", None) or qualified_name(o) for o in objects) + "\n")
        return head + tomli_w.dumps(clean(data))

    @classmethod
    def from_toml(cls, path: str | Path, **overrides) -> "BenchConfig":
        path = Path(path)
        try:
            data = tomllib.loads(path.read_text())
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
            raise ConfigError(f"cannot read benchmark config {path}: {e}") from e
        data = data.get("bench", data)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"{path}: unknown key(s) {', '.join(unknown)}; known keys: {', '.join(sorted(known))}")
        try:
            return cls(**{**data, **overrides})
        except ConfigError as e:
            raise ConfigError(f"{path}: {e}") from None
