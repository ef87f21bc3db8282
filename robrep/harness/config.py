"""``BenchConfig``: a whole experiment, typed and validated once, before any data is loaded or anything trained.

Every value, from TOML, the command line or Python, is checked for type and range with a
message that names the key and says what was expected (``robrep.validate``). Names are
checked against the registries (learners when the bench resolves them, with their configs).
"""
from __future__ import annotations

import dataclasses
import inspect
import math
import os
import time
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch

from robrep.encoders import Preprocessing
from robrep.nets import ARCHS
from robrep.protocols import PROTOCOLS
from robrep.rows.layout import CERTIFY_METHODS, NORMS, norm_name
from robrep.encoders.contract import ContractError
from robrep.validate import ConfigError, check_fields

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

DEFAULT_LEARNERS = ("vae", "beta-vae", "se-random", "se-adversarial")


def _as_tuple(value) -> tuple:
    """A config list: a single string (or object) is one item, never a sequence of letters."""
    if value is None or isinstance(value, (str, bytes, Path, torch.nn.Module, type)) or callable(value):
        return (value,)
    if isinstance(value, (int, float)):  # radii = 0.1
        return (value,)
    return tuple(value)


WORST_CASE = ("cascade", "per-attack")


def _cli(flag: str | None = None, **argparse_keywords) -> dict:
    """A field's command-line option: ``flag`` (default ``--field-name``) and argparse's keywords."""
    return {"cli": {"flag": flag, **argparse_keywords}}


def number(value) -> float:
    """A number as people write radii: ``0.1``, ``1e-2`` or a fraction such as ``8/255``; ValueError otherwise."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    text = str(value).strip()
    top, slash, bottom = text.partition("/")
    try:
        return float(top) / float(bottom) if slash else float(text)
    except (ValueError, ZeroDivisionError):
        raise ValueError(f"expected a number such as 0.1 or a fraction such as 8/255, got {value!r}") from None


def floats(text: str) -> list[float]:
    """``0,0.05,0.1`` or ``0,8/255`` as numbers (a command-line value); argparse reports the error."""
    import argparse

    try:
        return [number(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers or fractions (0,0.05 or 0,8/255), "
                                         f"got {text!r}") from None


def cli_norm(text: str) -> str:
    """``--norm``'s value in any usual spelling (Linf, L2, inf, 2); argparse reports the error."""
    import argparse

    try:
        return norm_name(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


ALIASES = {"eps": "radii"}  # the names other toolkits give a field (RobustBench, torchattacks, foolbox: eps)


def with_aliases(values: dict) -> dict:
    """``values`` with the aliases people arrive with read as robrep's fields: ``eps`` (one radius or several)
    is the clean accuracy and those radii, ``radii = (0, eps)``. Giving a field and its alias is refused."""
    values = dict(values)
    if "eps" in values and values["eps"] is None:
        del values["eps"]
    if "eps" in values:
        if "radii" in values:
            raise ConfigError("bench config: eps is another name for the attack radius: give eps or radii, not both")
        eps = tuple(number(e) for e in _as_tuple(values.pop("eps")))
        values["radii"] = (0.0, *(e for e in eps if e != 0))
    return values
# named budgets: steps x restarts, which every attack's budget follows (robrep.attacks.suites.budgets);
# "paper" is the full protocol, AutoAttack at its published budgets
BUDGETS = {"quick": (10, 1), "standard": (50, 5), "paper": (100, 10)}
DEFAULT_N_EXAMPLES = 1000  # test points attacked by default: a cap (a smaller test split is attacked whole)


@dataclass
class BenchConfig:
    """A whole experiment. Every field can be set in a TOML file (``--config``) or on the command line."""

    # Each field's ``metadata["cli"]`` is its command-line option (``robrep.cli`` builds ``robrep bench``'s parser,
    # and the options ``robrep sweep`` shares, from them): the flag, its help text and argparse's keywords.

    # registered names, NAME:LABEL variants, checkpoint folders, "module:attr" specs; from Python also
    # nn.Module instances or classes, factories and robrep.Encoder objects (see robrep.encoders)
    learners: tuple = field(default=DEFAULT_LEARNERS, metadata=_cli(
        "--learner", action="append", help="registered learner, NAME:LABEL, checkpoint folder, or package.module:attr "
        "(an nn.Module class or instance, or a factory); repeatable; default: vae, beta-vae, se-random, "
        "se-adversarial"))
    learner_config: dict = field(default_factory=dict, metadata={"doc": "per learner label, a table of its config "
                                 "overrides: {\"se-adversarial\": {\"gamma\": 50.0}}"})
    # what encoders robrep does not train expect their inputs normalised with ("imagenet", "mean=... std=...",
    # or {mean, std}), unless their learner_config says otherwise; robrep learners take [0, 1]
    preprocessing: str | dict | None = field(default=None, metadata=_cli(
        metavar="SPEC", help="input normalisation of the encoders robrep does not train: 'imagenet', 'none', or "
        "'mean=M1,M2,M3 std=S1,S2,S3' (attacks stay in [0, 1] pixel space)"))
    datasets: tuple[str, ...] = field(default=("mnist5k",), metadata=_cli(
        "--dataset", action="append", help="data set (repeatable; default mnist5k)"))
    tasks: tuple[str, ...] | None = field(default=None, metadata=_cli(  # default: every task of each data set
        "--task", action="append", help="task (repeatable; default: every task of the data set)"))
    arch: str = field(default="mlp", metadata=_cli(
        choices=ARCHS, help="architecture of learners that need training (default mlp)"))
    epochs: int | None = field(default=None, metadata=_cli(  # default: each learner's config
        type=int, help="training epochs of learners that need training"))
    radii: tuple[float, ...] = field(default=(0.0, 0.05, 0.1, 0.15, 0.2), metadata=_cli(  # distinct, >= 0, sorted
        type=floats, help="comma-separated attack radii in pixel units of [0, 1], fractions allowed: 0,8/255 "
        "(default 0,0.05,0.1,0.15,0.2; radius 0 is the clean accuracy)"))
    norm: str = field(default="linf", metadata=_cli(  # threat model: linf (every suite) or l2 (native suite only)
        type=cli_norm, help="threat model: linf or l2, also spelt Linf, L2, inf, 2 (default linf; l2: native "
        "suite only)"))
    suites: tuple[str, ...] = field(default=("native",), metadata=_cli(  # see `robrep list`
        "--suite", action="append", help="attack suite: native, torchattacks, foolbox (repeatable; default "
        "native). With several, a worst-case row per radius is added"))
    steps: int = field(default=100, metadata=_cli(
        type=int, help="iterations of every iterative attack, AutoAttack's parts too (default 100)"))
    restarts: int = field(default=10, metadata=_cli(
        type=int, help="random restarts (default 10); Square gets 5 x steps x restarts queries (5,000 by default)"))
    # the loss of robrep's PGD (the native suite): restarts alternating cross-entropy and the margin of the best
    # other class, as AutoAttack pairs APGD-CE with APGD-DLR (robrep.attacks.pgd)
    loss: str = field(default="ce+margin", metadata=_cli(
        choices=("ce", "margin", "ce+margin"), help="loss of robrep's PGD: ce, margin, or ce+margin (the default: "
        "its restarts alternate between them)"))
    budget: str | None = field(default=None, metadata=_cli(  # a named budget (BUDGETS) instead of steps, restarts
        choices=tuple(BUDGETS), help="named steps x restarts: quick 10 x 1, standard 50 x 5, paper 100 x 10 (the "
        "default, AutoAttack at its published budgets)"))
    # how several attacks make the worst case: "cascade" (each attacks only the points every earlier one failed
    # on, robrep.attacks.cascade) or "per-attack" (every attack on every point, for diagnostics)
    worst_case: str = field(default="cascade", metadata=_cli(
        choices=WORST_CASE, help="with several attacks: cascade (default; each attacks only the points every "
        "earlier one failed on, cheap ones first, no attack twice) or per-attack (every attack on every point)"))
    n_examples: int | None = field(default=DEFAULT_N_EXAMPLES, metadata=_cli(  # None: the whole test split
        type=int, help="test points attacked (default 1000)"))
    label_fraction: float = field(default=1.0, metadata=_cli(  # stratified; paper fig. 8
        type=float, help="fraction of training labels the probes see (default 1)"))
    # the linear probe on the frozen encoder: "standard" (fitted on clean features) or "adversarial" (trained on
    # PGD inputs at probe_eps, as RobustSSL's ALF; robrep.probes.train_adversarial_probe). Rows record which, and
    # a board ranks the two apart
    probe: str = field(default="standard", metadata=_cli(
        choices=("standard", "adversarial"), help="linear probe: standard (fitted on clean features; default) or "
        "adversarial (trained on PGD inputs at --probe-eps, in the run's norm)"))
    probe_eps: float | None = field(default=None, metadata=_cli(  # None: the headline radius of the radii
        type=number, help="radius the adversarial probe trains at (default: the protocol's headline radius, else "
        "0.1 if it is among the radii, else the middle non-zero radius)"))
    # certified lower bounds beside the claims when the attacks are done (robrep.certify.run; robrep certify RUN
    # adds them to a finished run, and its --complete decides the open points exactly)
    certify: str | None = field(default=None, metadata=_cli(
        choices=CERTIFY_METHODS, help="also certify every claim (CROWN, alpha-CROWN or IBP lower "
        "bounds on robust accuracy, checked against the run's attacks)"))
    images: float | None = field(default=None, metadata=_cli(
        type=float, metavar="RADIUS", help="write <out>/images/*.png: clean and PGD images at RADIUS and their "
        "reconstructions"))
    seed: int = field(default=0, metadata=_cli(type=int, help="seed of training, probes and attacks (default 0)"))
    device: str = field(default="cpu", metadata=_cli(help="cpu, cuda or cuda:N"))
    # the tasks of one encoder attacked together where the attack allows it (robrep's PGD; robrep.attacks.stacked):
    # the same rows, one encoder pass per step for every task (fewer, larger kernels: for GPUs)
    stack_tasks: bool = field(default=False, metadata=_cli(
        action="store_true", help="attack the tasks of one encoder in one stacked pass where the attack allows it "
        "(robrep's PGD): each task attacked as alone (up to the float rounding any other batch size brings), "
        "fewer and larger kernels (for GPUs)"))
    threads: int | None = field(default=None, metadata=_cli(  # None: as the process has them (the CLI chooses)
        type=int, help="CPU threads (default: OMP_NUM_THREADS, else this process's share of the cores); 1 when "
        "other processes share the machine"))
    out: str = field(default="robrep-bench", metadata=_cli(type=Path, help="output folder (default robrep-bench)"))
    data_root: str | None = field(default=None, metadata=_cli(
        type=Path, help="folder of a folder-backed data set (mnist, celeba)"))
    download: bool = field(default=False, metadata=_cli(
        action="store_true", help="download a missing data set where possible (mnist)"))
    retrain: bool = field(default=False, metadata=_cli(
        action="store_true", help="train again even if a cached checkpoint exists"))
    protocol: str | None = field(default=None, metadata=_cli(
        help=f"run a standard board protocol ({', '.join(PROTOCOLS)}): it fixes the data, tasks, threat model, "
        "radii, test points, labels and attacks; options that would change them are refused"))

    def __post_init__(self) -> None:
        for name in ("learners", "datasets", "radii", "suites"):
            setattr(self, name, _as_tuple(getattr(self, name)))
        try:  # radii as people write them: 8/255; norms as other toolkits spell them: Linf
            self.radii = tuple(number(r) if isinstance(r, str) else r for r in self.radii)
            self.norm = norm_name(self.norm) if isinstance(self.norm, str) else self.norm
        except ValueError as e:
            raise ConfigError(f"bench config: {e}") from None
        if self.tasks is not None:
            self.tasks = _as_tuple(self.tasks)
        for key in ("out", "data_root"):  # paths are fine where strings are expected
            if isinstance(getattr(self, key), os.PathLike):
                setattr(self, key, os.fspath(getattr(self, key)))
        if self.protocol is not None:
            self._apply_protocol()
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "learners"}
        for key, value in check_fields(type(self), values, "bench config").items():
            setattr(self, key, value)
        self._check_ranges()

    def _apply_protocol(self) -> None:
        """Set the fields the standard protocol fixes; a field set to anything else is refused (a run that
        changes the protocol is not that protocol: run it without ``protocol``, as an experiment)."""
        from robrep.protocols import protocol
        from robrep.registry import UnknownNameError

        try:
            fixed = protocol(self.protocol).bench_fields()
        except UnknownNameError as e:
            raise ConfigError(f"bench config: {e}") from None
        defaults = {f.name: f.default for f in dataclasses.fields(self)}
        for key, wanted in fixed.items():
            value = getattr(self, key)
            same = tuple(value) == tuple(wanted) if isinstance(wanted, tuple) and value is not None else \
                value == wanted
            if not same and value != defaults[key] and not (key == "datasets" and value == ("mnist5k",)):
                raise ConfigError(f"bench config: protocol {self.protocol} fixes {key} = {wanted!r}; {key} = "
                                  f"{value!r} would make it another protocol. Drop {key}, or drop protocol to "
                                  "run it as an experiment (never ranked on the protocol's board)")
            setattr(self, key, wanted)

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
        self._check_probe(bad)
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

    def _check_probe(self, bad) -> None:
        """The probe mode, and the adversarial probe's radius resolved: the protocol's headline radius under a
        protocol (any other is refused), else 0.1 if attacked, else the smallest attacked radius."""
        if self.probe not in ("standard", "adversarial"):
            raise bad("probe", "standard or adversarial", self.probe)
        if self.probe == "standard":
            if self.probe_eps is not None:
                raise ConfigError("bench config: probe_eps is the adversarial probe's radius: give it with probe = "
                                  "adversarial, or leave it out")
            return
        from robrep.board.tables import headline_radius

        wanted = self.probe_eps
        if self.protocol is not None:
            from robrep.protocols import protocol

            headline = protocol(self.protocol).headline
            if wanted is not None and wanted != headline:
                raise ConfigError(f"bench config: protocol {self.protocol} trains the adversarial probe at its "
                                  f"headline radius {headline:g}; probe_eps = {wanted:g} would make it another "
                                  "protocol. Drop probe_eps, or drop protocol to run it as an experiment")
            wanted = headline
        dataset = self.datasets[0] if len(self.datasets) == 1 else None
        self.probe_eps = headline_radius(self.radii, dataset, self.norm) if wanted is None else wanted
        if not (self.probe_eps > 0 and math.isfinite(self.probe_eps)) or \
                (self.norm == "linf" and self.probe_eps > 1):
            raise bad("probe_eps", "a radius > 0 (at most 1 under L-inf)", self.probe_eps)

    @property
    def probe_mode(self) -> str:
        """What the rows' ``probe`` column says: ``standard`` or ``adversarial <norm> <radius>``."""
        from robrep.rows.layout import probe_mode

        return probe_mode(self.probe, self.norm, self.probe_eps)

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
        try:
            return cls.from_values({**data.get("bench", data), **overrides})
        except ConfigError as e:
            raise ConfigError(f"{path}: {e}") from None

    @classmethod
    def from_values(cls, values: dict) -> "BenchConfig":
        """A config from field values as a user gives them: aliases read (``eps``), unknown keys refused with
        the nearest known ones."""
        from robrep.registry import did_you_mean

        values = with_aliases(values)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            near = "".join(did_you_mean(k, known | set(ALIASES)) for k in unknown)
            raise ConfigError(f"unknown key(s) {', '.join(unknown)}{near}; known keys: "
                              f"{', '.join(sorted(known | set(ALIASES)))}")
        return cls(**values)


def field_doc(f: dataclasses.Field) -> str:
    """What a field means, in one line: its command-line help, or its ``doc``."""
    return (f.metadata.get("cli") or {}).get("help") or f.metadata.get("doc", "")


def options_signature(fn, leading: list[inspect.Parameter]) -> tuple[inspect.Signature, str]:
    """``fn``'s signature with every BenchConfig field (and ``eps``) as a typed keyword, and a docstring section
    describing them, both generated from the fields so they cannot drift from the config."""
    params = list(leading)
    lines = ["", "    Options (each a field of ``BenchConfig``; the same as ``robrep bench``'s flags):", ""]
    for f in dataclasses.fields(BenchConfig):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        params.append(inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=f.type))
        lines.append(f"    - ``{f.name}`` (default ``{default!r}``): {field_doc(f)}")
    params.append(inspect.Parameter("eps", inspect.Parameter.KEYWORD_ONLY, default=None,
                                    annotation="float | list[float] | None"))
    lines.append("    - ``eps``: another name for the attack radius, as other toolkits call it: ``eps=8/255`` means "
                 "``radii=(0, 8/255)``")
    sig = inspect.signature(fn)
    return sig.replace(parameters=params, return_annotation=sig.return_annotation), "\n".join(lines) + "\n"
