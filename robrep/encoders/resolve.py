"""From what a user names to a frozen ``Encoder`` on a data set, with its provenance.

A learner may be given as

- a registered name (``vae``, a plugin's name) or ``NAME:LABEL`` (a labelled variant of a robrep
  learner, configured under ``learner_config["NAME:LABEL"]``);
- a checkpoint folder (``robrep train`` or ``robrep.save`` made it);
- ``package.module:attr`` (an importable module, class, instance or factory, as uvicorn and
  setuptools write it; ``package.module:attr:LABEL`` names a variant);
- from Python, also an ``nn.Module`` instance or class, a factory returning a module, or a
  ``robrep.Encoder`` (which carries a name and a preprocessing).

``resolve`` checks names, types and imports before any work; ``obtain`` trains (or reuses
from the cache) robrep learners given by name, loads checkpoints, and builds everything
else as it is: robrep never trains an object it was handed.
"""
from __future__ import annotations

import copy
import dataclasses
import importlib
import importlib.util
import inspect
import json
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from robrep.checkpoint import CheckpointError, load_checkpoint, read_config
from robrep.encoders.adapter import Encoder, Preprocessing, freeze
from robrep.encoders.contract import ContractError, LearnerError, is_learner, output_method
from robrep.learners import check_overrides, config_record, create_learner, learner_source
from robrep.provenance import distribution_of, qualified_name
from robrep.registry import LEARNERS, UnknownNameError
from robrep.validate import check_fields

log = logging.getLogger(__name__)

FOREIGN_OPTIONS = ("preprocessing", "kwargs")  # what learner_config may set for an encoder robrep does not train


@dataclass
class EncoderSource:
    """One entry of a benchmark's ``learners``, resolved before any work is done."""

    label: str  # how rows, tables and errors name it
    kind: str  # "learner" (robrep trains it) | "checkpoint" | "module" (benchmarked as it is)
    learner: str  # the rows' learner column
    source: str  # where it comes from (the rows' source column)
    name: str = ""  # kind learner: the registered name
    path: Path | None = None  # kind checkpoint
    obj: Any = None  # kind module: an nn.Module instance or class, a factory, or an Encoder
    options: dict = field(default_factory=dict)  # its learner_config entry
    spec: str = ""  # as written ("module:attr", a name), or the Python object's qualified name


@dataclass
class Obtained:
    """A frozen encoder on the device, and what the rows record about it."""

    encoder: Encoder
    run: str  # names its probes, masks and image grids
    checkpoint: str  # its checkpoint folder ("" for an encoder robrep did not save)
    learner: str
    config: dict  # the rows' learner_config
    sha256: str  # encoder_sha256
    source: str
    arch: str
    train_seconds: float | None = None  # as the checkpoint records (None: not trained by robrep)


def _with_version(what: str, module: str) -> str:
    dist = distribution_of(module)
    return f"{what} ({dist})" if dist else f"{what} (not from an installed distribution)"


def _object_label(obj) -> str:
    own = getattr(obj, "name", None)
    if isinstance(own, str) and own:
        return own
    return obj.__name__ if inspect.isclass(obj) or inspect.isroutine(obj) else type(obj).__name__


def _foreign_options(label: str, options: dict, preprocessing, source: str) -> dict:
    unknown = sorted(set(options) - set(FOREIGN_OPTIONS))
    if unknown:
        raise LearnerError(label, f"is benchmarked as it is, so its learner_config takes only "
                                  f"{', '.join(FOREIGN_OPTIONS)}; got {', '.join(unknown)}", source)
    if not isinstance(options.get("kwargs", {}), dict):
        raise LearnerError(label, "learner_config kwargs must be a table of constructor arguments", source)
    if "preprocessing" not in options and preprocessing is not None:
        options = {**options, "preprocessing": preprocessing}
    try:
        Preprocessing.parse(options.get("preprocessing"))
    except ContractError as e:
        raise LearnerError(label, f"has a preprocessing robrep cannot use: {e}", source) from e
    return options


def _dotted_hint(text: str) -> str:
    """For ``pkg.mod.attr`` (a dotted path where robrep expects ``module:attr``): the ``module:attr`` form that
    imports, as a hint; nothing when no prefix of it is an importable module."""
    parts = text.split(".")
    if len(parts) < 2 or not all(p.isidentifier() for p in parts):
        return ""
    for cut in range(len(parts) - 1, 0, -1):
        module = ".".join(parts[:cut])
        try:
            if importlib.util.find_spec(module) is None:
                continue
        except (ImportError, ValueError):
            continue
        return (f"a Python object is named as 'module:attr' (a colon before the attribute): did you mean "
                f"'{module}:{'.'.join(parts[cut:])}'?")
    return ""


def _import(label: str, module_name: str, attr: str):
    try:
        obj = importlib.import_module(module_name)
    except Exception as e:  # ImportError, or whatever the module raises while importing
        raise LearnerError(label, f"is neither a registered learner (see `robrep list`) nor an importable "
                                  f"'module:attr': importing {module_name!r} failed: {type(e).__name__}: {e}") from e
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise LearnerError(label, f"names {attr!r} in module {module_name!r}, which has no attribute "
                                      f"{part!r}") from None
    return obj


def _check_object(label: str, obj, source: str) -> None:
    """A Python object can only be a module (instance or class) or a factory."""
    if isinstance(obj, (Encoder, nn.Module)):
        if output_method(type(obj)) is None:
            raise LearnerError(label, f"is a {type(obj).__name__} with neither encode(x) nor forward(x)", source)
    elif inspect.isclass(obj):
        if not issubclass(obj, nn.Module):
            raise LearnerError(label, f"is the class {obj.__name__}, not a torch.nn.Module subclass", source)
        if output_method(obj) is None:
            raise LearnerError(label, f"is the class {obj.__name__}, which has neither encode(x) nor forward(x)",
                               source)
    elif not callable(obj):
        raise LearnerError(label, f"is of type {type(obj).__name__}; a learner is a registered name, a checkpoint "
                                  "folder, 'module:attr', a torch.nn.Module (instance or class) or a factory "
                                  "returning one", source)


def resolve(spec, learner_config: dict | None = None, preprocessing=None) -> EncoderSource:
    """What ``spec`` is and where it comes from; raises ``UnknownNameError`` or ``LearnerError`` on a bad one.

    ``learner_config`` maps labels to options: config fields for robrep learners, ``preprocessing``
    and ``kwargs`` (constructor arguments) for anything else. ``preprocessing`` is the default for
    encoders that are not robrep learners."""
    learner_config = learner_config or {}
    if isinstance(spec, (str, os.PathLike)):
        return _resolve_text(os.fspath(spec), learner_config, preprocessing)
    if isinstance(spec, Encoder):
        label = spec.name
        inner = type(spec.module)
        source = spec.source or _with_version(f"python module {qualified_name(inner)}", inner.__module__)
        return EncoderSource(label, "module", label, source, obj=spec, spec=qualified_name(spec.module))
    if not (isinstance(spec, nn.Module) or callable(spec)):
        _check_object(repr(spec)[:60], spec, "")
    label = _object_label(spec)
    kind = "module" if isinstance(spec, nn.Module) else "class" if inspect.isclass(spec) else "factory"
    module = getattr(spec, "__module__", None) or type(spec).__module__
    source = _with_version(f"python {kind} {qualified_name(spec)}", module)
    _check_object(label, spec, source)
    options = _foreign_options(label, dict(learner_config.get(label, {})), preprocessing, source)
    return EncoderSource(label, "module", label, source, obj=spec, options=options, spec=qualified_name(spec))


def _resolve_text(text: str, learner_config: dict, preprocessing) -> EncoderSource:
    if not text.strip():
        raise LearnerError(text, "is empty: expected a learner name, a checkpoint folder or 'module:attr'")
    options = dict(learner_config.get(text, {}))
    if Path(text).is_dir():
        try:
            meta = read_config(text)
        except CheckpointError as e:
            raise LearnerError(Path(text).name, f"is a folder but not a usable checkpoint: {e}") from e
        return EncoderSource(Path(text).name, "checkpoint", meta["learner"], f"checkpoint {Path(text).resolve()}",
                             path=Path(text), spec=text)
    head, _, rest = text.partition(":")
    if head in LEARNERS:  # a registered name, or NAME:LABEL
        entry = LEARNERS.get(head)
        source = learner_source(head)
        if is_learner(entry):
            fields = {f.name for f in dataclasses.fields(entry.config_class)}
            unknown = sorted(set(options) - fields)
            if unknown:
                raise LearnerError(text, f"has no config field(s) {', '.join(unknown)}; its fields are: "
                                         f"{', '.join(sorted(fields))}", source)
            try:  # types and ranges of its config, before any data is loaded (the shape comes later)
                entry.config_class(**check_fields(entry.config_class, options, f"learner_config.{text!r}"))
            except ValueError as e:
                raise LearnerError(text, f"has a config it refuses: {e}", source) from None
            return EncoderSource(text, "learner", head, source, name=head, options=options, spec=text)
        options = _foreign_options(text, options, preprocessing, source)
        return EncoderSource(text, "module", head, source, obj=entry, options=options, spec=text)
    if not rest:
        hint = f" (and there is no checkpoint folder at {text})" if os.sep in text or "/" in text else ""
        dotted = _dotted_hint(text)
        try:
            LEARNERS.get(text)
        except UnknownNameError as e:
            if dotted:
                raise UnknownNameError(f"unknown learner {text!r}: {dotted}") from None
            raise UnknownNameError(f"{e}{hint}; a learner may also be a checkpoint folder or "
                                   "'package.module:attr'") from None
    attr, _, _label = rest.partition(":")  # module:attr or module:attr:LABEL
    obj = _import(text, head, attr)
    source = _with_version(f"{head}:{attr}", head)
    _check_object(text, obj, source)
    options = _foreign_options(text, options, preprocessing, source)
    return EncoderSource(text, "module", f"{head}:{attr}", source, obj=obj, options=options, spec=text)


def foreign_run(label: str, dataset: str, sha256: str) -> str:
    """The run name of an encoder robrep does not train: its label (made safe for a file name), data set, hash."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", label).strip("-.") or "encoder"
    return f"{slug}-{dataset}-{sha256[:8]}"


def _call(target, shape, kwargs: dict):
    """Build from a class or factory: with ``shape=`` when it takes it, plus the configured kwargs."""
    try:
        params = inspect.signature(target).parameters
    except (TypeError, ValueError):  # a builtin without a signature
        params = {}
    # a robrep learner class takes its config fields as keyword overrides, shape among them
    takes_shape = "shape" in params or (is_learner(target) and any(p.kind is p.VAR_KEYWORD for p in params.values()))
    if takes_shape and "shape" not in kwargs:
        kwargs = {**kwargs, "shape": tuple(shape)}
    return target(**kwargs)


def build(src: EncoderSource, shape: tuple[int, ...], seed: int) -> Encoder:
    """The encoder of a ``module`` source, as it is: a copy of an instance (the caller's object is never
    changed), or a class or factory called under ``seed`` (so random initial weights are reproducible,
    and torch's global generator is left as it was)."""
    obj, options = src.obj, src.options
    if isinstance(obj, Encoder):
        return copy.deepcopy(obj)
    if isinstance(obj, nn.Module):
        try:
            module = copy.deepcopy(obj)
        except Exception as e:
            raise ContractError(f"cannot copy the module (robrep attacks a copy, never the object it was "
                                f"handed): {type(e).__name__}: {e}") from e
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            module = _call(obj, shape, dict(options.get("kwargs", {})))
        if not isinstance(module, nn.Module):
            raise ContractError(f"{qualified_name(obj)} returned {type(module).__name__}, not a torch.nn.Module")
    return Encoder(module, preprocessing=options.get("preprocessing"), name=src.label, source=src.source)


def obtain(src: EncoderSource, ds, *, seed: int, device: torch.device, arch: str | None = None,
           epochs: int | None = None, retrain: bool = False, progress=None, train: bool = True) -> Obtained:
    """The frozen encoder of ``src`` for data set ``ds``, on ``device``. Robrep learners given by name are
    trained, or reused from the checkpoint cache; checkpoints are loaded (hashes verified); anything
    else is built as it is. ``progress`` (optional) has ``phase(description, total)`` and ``advance(n, info)``.
    ``train=False``: a learner that is not in the cache is an error (it was trained by another process)."""
    if src.kind == "module":
        encoder = freeze(build(src, ds.shape, seed).to(device))
        sha = encoder.sha256()
        config = {"spec": src.spec, "class": qualified_name(encoder.module), "output": encoder.output,
                  "preprocessing": encoder.preprocessing.as_dict() if encoder.preprocessing else None,
                  "kwargs": src.options.get("kwargs", {}), "shape": list(ds.shape)}
        return Obtained(encoder, foreign_run(src.label, ds.name, sha), "", src.learner, config, sha, src.source, "")
    if src.kind == "checkpoint":
        learner, run_dir = load_checkpoint(src.path, map_location=device), Path(src.path)
        if tuple(learner.config.shape) != ds.shape:
            raise ContractError(f"checkpoint {src.path} expects inputs {learner.config.shape}, data set {ds.name} "
                                f"has {ds.shape}")
    else:
        learner, run_dir = _train_or_reuse(src, ds, seed=seed, device=device, arch=arch, epochs=epochs,
                                           retrain=retrain, progress=progress, train=train)
    meta = read_config(run_dir)
    source = meta.get("source", src.source) if src.kind == "learner" else f"{src.source}; {meta.get('source', '')}"
    encoder = Encoder(freeze(learner), name=src.label, source=source)
    return Obtained(encoder, run_dir.name, str(run_dir.resolve()), meta["learner"], meta["config"], meta["sha256"],
                    source, meta["config"].get("arch") or "", meta.get("train_seconds"))


def planned_run(src: EncoderSource, ds, *, seed: int, arch: str | None = None, epochs: int | None = None):
    """What training ``src`` (a robrep learner given by name) on ``ds`` means, before it happens:
    (config overrides, full config as a dict, checkpoint folder in the cache)."""
    from robrep.train import run_dir_for  # robrep.train imports robrep.learners, as this module does

    fields = {f.name for f in dataclasses.fields(LEARNERS.get(src.name).config_class)}
    overrides = check_overrides(src.name, dict(src.options))
    for key, value in (("arch", arch), ("epochs", epochs)):  # only where the learner has the field
        if key in fields and key not in overrides and value is not None:
            overrides[key] = value
    config = config_record(create_learner(src.name, shape=ds.shape, **overrides).config)
    return overrides, config, run_dir_for(src.name, ds.name, config, seed)


def cached_meta(run_dir: Path, config: dict) -> dict | None:
    """The verified config.json of the checkpoint cached at ``run_dir`` if it was trained with ``config``
    (None if there is none, or another config); a damaged one raises CheckpointError."""
    if not (run_dir / "config.json").is_file():
        return None
    meta = read_config(run_dir)
    return meta if meta["config"] == json.loads(json.dumps(config)) else None


def _train_or_reuse(src: EncoderSource, ds, *, seed, device, arch, epochs, retrain, progress, train=True):
    from robrep.train import train as train_learner

    overrides, config, run_dir = planned_run(src, ds, seed=seed, arch=arch, epochs=epochs)
    if not retrain or not train:
        try:
            if cached_meta(run_dir, config) is not None:
                log.info("reusing checkpoint %s", run_dir)
                return load_checkpoint(run_dir, map_location=device), run_dir
        except CheckpointError as e:
            if not train:
                raise CheckpointError(f"the checkpoint of {src.label} trained for this run is damaged: {e}") from e
            log.warning("cached checkpoint %s cannot be used (%s); training %s again", run_dir, e, src.label)
    if not train:  # another process trained it: it must be in the cache every process shares
        raise CheckpointError(f"{src.label} was trained for this run, but its checkpoint {run_dir} is not in this "
                              "process's cache: every process must share robrep's cache (ROBREP_CACHE)")
    learner = train_learner(src.name, ds, seed=seed, device=device, out=run_dir, progress=progress or False,
                            label=src.label, **overrides)
    return learner, run_dir
