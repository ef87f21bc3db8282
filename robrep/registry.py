"""A small named registry, in the style of timm's (register / create / list).

Unlike timm, a duplicate name is rejected instead of silently overwriting the first
registration. Registries with an entry-point ``group`` also hold third-party plugins,
loaded lazily the first time a name is looked up (see ``robrep.plugins``); built-ins
are registered at import time, so they always win a name clash.
"""
from __future__ import annotations

import difflib
import fnmatch
from typing import Any, Callable, Generic, Iterator, TypeVar

T = TypeVar("T")


class UnknownNameError(KeyError):
    """An unknown name was asked for; the message lists the known ones."""

    def __str__(self) -> str:  # KeyError quotes its message; we want it plain
        return str(self.args[0]) if self.args else ""


def did_you_mean(name: object, known) -> str:
    """`` (did you mean 'vae'?)`` for the known names nearest to a misspelled ``name``, or nothing."""
    if not isinstance(name, str):
        return ""
    near = difflib.get_close_matches(name, list(known), n=3, cutoff=0.6) or difflib.get_close_matches(
        name.lower(), [k.lower() for k in known], n=3, cutoff=0.6)
    return f" (did you mean {' or '.join(map(repr, near))}?)" if near else ""


class Registry(Generic[T]):
    """Maps names to factories (classes or functions) of one kind of thing."""

    def __init__(self, kind: str, group: str | None = None):
        self.kind = kind
        self.group = group  # entry-point group of third-party plugins, if any
        self._entries: dict[str, T] = {}
        self._origin: dict[str, str] = {}
        self._target: dict[str, str] = {}  # a plugin's entry point value, "module:attr"
        self._plugins_loaded = group is None

    def register(self, name: str, obj: T | None = None, *, origin: str = "built-in", target: str = ""):
        """Register ``obj`` under ``name``; usable as ``@registry.register("name")``."""

        def _add(o: T) -> T:
            if not name or not isinstance(name, str):
                raise ValueError(f"{self.kind} name must be a non-empty string, got {name!r}")
            if name in self._entries:
                raise ValueError(
                    f"duplicate {self.kind} name {name!r}: already registered by "
                    f"{self._origin[name]}"
                )
            self._entries[name] = o
            self._origin[name] = origin
            self._target[name] = target or f"{getattr(o, '__module__', '?')}:{getattr(o, '__qualname__', name)}"
            return o

        return _add(obj) if obj is not None else _add

    def _ensure_plugins(self) -> None:
        if not self._plugins_loaded:
            self._plugins_loaded = True
            from robrep.plugins import load_plugins

            load_plugins(self)

    def reload_plugins(self) -> None:
        """Forget plugin entries and load the entry points again (after installing a plugin)."""
        for name in [n for n, o in self._origin.items() if o != "built-in"]:
            del self._entries[name], self._origin[name], self._target[name]
        self._plugins_loaded = self.group is None
        self._ensure_plugins()

    def get(self, name: str) -> T:
        self._ensure_plugins()
        try:
            return self._entries[name]
        except KeyError:
            from robrep.plugins import failures

            known = ", ".join(sorted(self._entries)) or "(none)"
            failed = [f for f in failures() if f.group == self.group and f.name == name]
            hint = f" (a plugin of that name failed to load: {failed[0].error})" if failed else ""
            near = did_you_mean(name, self._entries) if not failed else ""
            raise UnknownNameError(f"unknown {self.kind} {name!r}{hint}{near}; known {self.kind}s: {known}") from None

    def create(self, name: str, *args: Any, **kwargs: Any) -> Any:
        factory = self.get(name)
        assert callable(factory)
        return factory(*args, **kwargs)  # type: ignore[operator]

    def list(self, pattern: str = "*") -> list[str]:
        self._ensure_plugins()
        return sorted(n for n in self._entries if fnmatch.fnmatch(n, pattern))

    def origin(self, name: str) -> str:
        self.get(name)
        return self._origin[name]

    def target(self, name: str) -> str:
        """``module:attr`` of the entry (a plugin's entry point value)."""
        self.get(name)
        return self._target[name]

    def __contains__(self, name: object) -> bool:
        self._ensure_plugins()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.list())

    def __len__(self) -> int:
        self._ensure_plugins()
        return len(self._entries)


LEARNERS: Registry[Callable[..., Any]] = Registry("learner", group="robrep.encoders")
DATASETS: Registry[Callable[..., Any]] = Registry("dataset", group="robrep.datasets")
ATTACKS: Registry[Callable[..., Any]] = Registry("attack", group="robrep.attacks")
SUITES: Registry[Callable[..., Any]] = Registry("suite")
