"""A small named registry, in the style of timm's (register / create / list).

Unlike timm, a duplicate name is rejected instead of silently overwriting the
first registration: the entry points of a later issue rely on that.
"""
from __future__ import annotations

import fnmatch
from typing import Any, Callable, Generic, Iterator, TypeVar

T = TypeVar("T")


class UnknownNameError(KeyError):
    """An unknown name was asked for; the message lists the known ones."""

    def __str__(self) -> str:  # KeyError quotes its message; we want it plain
        return str(self.args[0]) if self.args else ""


class Registry(Generic[T]):
    """Maps names to factories (classes or functions) of one kind of thing."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, T] = {}
        self._origin: dict[str, str] = {}

    def register(self, name: str, obj: T | None = None, *, origin: str = "built-in"):
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
            return o

        return _add(obj) if obj is not None else _add

    def get(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            known = ", ".join(sorted(self._entries)) or "(none)"
            raise UnknownNameError(f"unknown {self.kind} {name!r}; known {self.kind}s: {known}") from None

    def create(self, name: str, *args: Any, **kwargs: Any) -> Any:
        factory = self.get(name)
        assert callable(factory)
        return factory(*args, **kwargs)  # type: ignore[operator]

    def list(self, pattern: str = "*") -> list[str]:
        return sorted(n for n in self._entries if fnmatch.fnmatch(n, pattern))

    def origin(self, name: str) -> str:
        self.get(name)
        return self._origin[name]

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.list())

    def __len__(self) -> int:
        return len(self._entries)


LEARNERS: Registry[Callable[..., Any]] = Registry("learner")
DATASETS: Registry[Callable[..., Any]] = Registry("dataset")
ATTACKS: Registry[Callable[..., Any]] = Registry("attack")
SUITES: Registry[Callable[..., Any]] = Registry("suite")
