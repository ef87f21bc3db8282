"""The processes of one robrep command: one, or many launched by ``torchrun`` (on one machine or many).

``World.current(device)`` is what a command runs on. Launched by torchrun (``WORLD_SIZE`` > 1 in
the environment) it joins torch.distributed's rendezvous (``env://``) and starts the default process
group: gloo on CPU, nccl on GPU, each rank on ``cuda:LOCAL_RANK``. Otherwise it is a world of one
process with an in-memory store, so the harness has one code path.

What ranks share goes through torch.distributed's key-value store, never sockets of robrep's
own: ``units`` hands out work from a shared counter (``store.add``), so a rank that finishes
early takes the next unit; ``publish``/``take`` is a queue that grows while ranks take from it; ``decide`` lets rank 0 compute something (what is finished, what to
run) that every rank then reads; ``barrier`` waits for every rank; ``note``/``notes`` share small
records (a learner that failed). Files (checkpoints, probes, finished cells) go through the
output folder and the cache, which every rank must see: ``check_shared`` refuses to start
otherwise.

``ROBREP_DIST_TIMEOUT`` (seconds, default one day) bounds every wait: a rank waits at a
barrier while another trains a learner, which may take hours. A rank that fails says so in the
store (``fail``) and every waiting rank stops at once; torchrun stops the ranks of a node whose
rank dies, and the other nodes' ranks stop when their waits time out (a node that is killed
outright cannot say so).
"""
from __future__ import annotations

import datetime
import json
import logging
import os
import secrets
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 24 * 3600


class DistributedError(RuntimeError):
    """The processes of a distributed run cannot work together (the message says what to fix)."""


class _LocalStore:
    """The store of a world of one process: the few calls of torch.distributed.Store that robrep uses."""

    def __init__(self):
        self._data: dict[str, bytes] = {}
        self._lock = threading.Lock()

    def add(self, key: str, n: int) -> int:
        with self._lock:
            value = int(self._data.get(key, b"0")) + n
            self._data[key] = str(value).encode()
            return value

    def set(self, key: str, value) -> None:
        self._data[key] = value.encode() if isinstance(value, str) else bytes(value)

    def get(self, key: str) -> bytes:
        if key not in self._data:
            raise DistributedError(f"nothing was published under {key!r} in this process")
        return self._data[key]

    def check(self, keys: list[str]) -> bool:
        return all(k in self._data for k in keys)

    def wait(self, keys: list[str]) -> None:
        if not self.check(keys):  # one process: nobody else could ever set them
            raise DistributedError(f"waiting for {keys} in a world of one process")


def _timeout() -> datetime.timedelta:
    raw = os.environ.get("ROBREP_DIST_TIMEOUT", "")
    try:
        seconds = float(raw) if raw else DEFAULT_TIMEOUT_S
    except ValueError:
        raise DistributedError(f"ROBREP_DIST_TIMEOUT must be a number of seconds, got {raw!r}") from None
    if seconds <= 0:
        raise DistributedError(f"ROBREP_DIST_TIMEOUT must be positive, got {raw!r}")
    return datetime.timedelta(seconds=seconds)


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "")
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise DistributedError(f"{name} must be an integer, got {raw!r} (is this a torchrun launch?)") from None


class World:
    """The ranks of one command and what they share: a store, barriers, a work counter."""

    _current: World | None = None

    def __init__(self, rank: int = 0, size: int = 1, local_rank: int = 0, store=None, owned: bool = False):
        self.rank, self.size, self.local_rank = rank, size, local_rank
        self.store = store if store is not None else _LocalStore()
        self.owned = owned  # this World started the process group, so it ends it
        self._round = 0  # bench() calls so far: keys of one call never meet another's
        self.prefix = "robrep/0"

    @property
    def distributed(self) -> bool:
        return self.size > 1

    @property
    def is_writer(self) -> bool:
        """Rank 0 writes the results store and merges what the others post."""
        return self.rank == 0

    @classmethod
    def current(cls, device: str | torch.device | None = None) -> World:
        """The world of this process: joins torchrun's rendezvous the first time when launched by torchrun."""
        if cls._current is not None:
            return cls._current
        import torch.distributed as dist

        size = _env_int("WORLD_SIZE", 1)
        if size <= 1 or not dist.is_available():
            cls._current = World()
            return cls._current
        rank, local_rank = _env_int("RANK", 0), _env_int("LOCAL_RANK", 0)
        timeout = _timeout()
        dev = torch.device(device or "cpu")
        if dist.is_initialized():  # the caller started the group: use its store
            store = dist.distributed_c10d._get_default_store()
            cls._current = World(dist.get_rank(), dist.get_world_size(), local_rank, dist.PrefixStore("robrep", store))
            return cls._current
        try:
            store, rank, size = next(dist.rendezvous("env://", rank=rank, world_size=size, timeout=timeout))
        except (ValueError, RuntimeError) as e:
            raise DistributedError(f"WORLD_SIZE={size} says this is a distributed launch, but the rendezvous "
                                   f"failed ({e}); launch with torchrun, which sets MASTER_ADDR, MASTER_PORT, RANK "
                                   "and LOCAL_RANK") from e
        store.set_timeout(timeout)
        backend = "nccl" if dev.type == "cuda" else "gloo"
        kwargs = {}
        if dev.type == "cuda":
            if not torch.cuda.is_available():
                raise DistributedError("--device cuda was asked for, but torch sees no CUDA device on this rank")
            torch.cuda.set_device(local_rank)
            kwargs["device_id"] = torch.device("cuda", local_rank)
        dist.init_process_group(backend, store=dist.PrefixStore("default_pg", store), rank=rank, world_size=size,
                                timeout=timeout, **kwargs)
        cls._current = World(rank, size, local_rank, dist.PrefixStore("robrep", store), owned=True)
        log.info("rank %d of %d (local rank %d), backend %s", rank, size, local_rank, backend)
        return cls._current

    @classmethod
    def shutdown(cls) -> None:
        """End the process group this process started (the CLI calls this when a command ends)."""
        world, cls._current = cls._current, None
        if world is not None and world.owned:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()

    def device(self, device: torch.device) -> torch.device:
        """``cuda`` on a rank means this rank's own GPU, ``cuda:LOCAL_RANK``; other devices are kept."""
        if self.distributed and device.type == "cuda" and device.index is None:
            return torch.device("cuda", self.local_rank)
        return device

    # --- what ranks share ---------------------------------------------------------------------------------------

    def begin(self) -> str:
        """Start a new round (one bench call): its keys are new on every rank, in the same order."""
        self._round += 1
        self.prefix = f"robrep/{self._round}"
        return self.prefix

    def _key(self, name: str) -> str:
        return f"{self.prefix}/{name}"

    def units(self, name: str, n: int) -> Iterator[int]:
        """Indices 0..n-1, each to exactly one rank, handed out in order as ranks ask for the next."""
        key = self._key(f"next/{name}")
        while True:
            i = self.store.add(key, 1) - 1
            if i >= n:
                return
            yield i

    def publish(self, queue: str, items: list) -> None:
        """Append JSON ``items`` to a shared queue (any rank may publish; ``take`` hands them out)."""
        end = self.store.add(self._key(f"queue/{queue}/size"), len(items))
        for k, item in enumerate(items):
            self.store.set(self._key(f"queue/{queue}/{end - len(items) + k}"), json.dumps(item))

    def take(self, queue: str, closed: Callable[[], bool], poll_s: float = 0.2) -> Iterator[Any]:
        """Items of a shared queue, each to exactly one rank, in the order they were published; waits for more
        while ``closed()`` is false (more may come), and ends when the queue is closed and nothing is left."""
        while True:
            i = self.store.add(self._key(f"queue/{queue}/next"), 1) - 1
            key = self._key(f"queue/{queue}/{i}")
            while not self.store.check([key]):
                if closed() and self.store.add(self._key(f"queue/{queue}/size"), 0) <= i:
                    return
                self._failed()
                time.sleep(poll_s)
            yield json.loads(self.store.get(key))

    def count(self, name: str, n: int = 1) -> int:
        """Add ``n`` to a shared counter and return its value (``n=0`` reads it)."""
        return self.store.add(self._key(f"count/{name}"), n)

    def decide(self, name: str, compute: Callable[[], Any]) -> Any:
        """Rank 0 computes a JSON value and publishes it; every rank returns it (the others wait for it)."""
        key = self._key(f"decided/{name}")
        if self.is_writer:
            value = compute()
            self.store.set(key, json.dumps(value))
            return json.loads(json.dumps(value))
        self._wait(key)
        return json.loads(self.store.get(key))

    def barrier(self, name: str) -> None:
        """Wait until every rank has arrived here."""
        if not self.distributed:
            return
        arrived = self.store.add(self._key(f"barrier/{name}"), 1)
        if arrived == self.size:
            self.store.set(self._key(f"barrier/{name}/open"), "1")
        self._wait(self._key(f"barrier/{name}/open"))

    def fail(self, message: str) -> None:
        """Tell every rank that this one failed, so none waits for it (torchrun stops the ranks of the failing
        rank's node, but not other nodes')."""
        key = self._key("failed")
        if self.distributed and not self.store.check([key]):
            self.store.set(key, f"rank {self.rank}: {message}")

    def _failed(self) -> None:
        key = self._key("failed")
        if self.store.check([key]):
            raise DistributedError(f"stopping: {self.store.get(key).decode()}")

    def _wait(self, key: str, poll_s: float = 0.2) -> None:
        """Wait for ``key`` to be set; stop if another rank failed, or after ROBREP_DIST_TIMEOUT."""
        if not self.distributed:
            self.store.wait([key])
            return
        deadline = time.monotonic() + _timeout().total_seconds()
        while not self.store.check([key]):
            self._failed()
            if time.monotonic() > deadline:
                raise DistributedError(f"rank {self.rank} waited ROBREP_DIST_TIMEOUT for {key!r}: another rank is "
                                       "stuck or gone")
            time.sleep(poll_s)

    def agree(self, name: str, value: Any, what: str) -> None:
        """Every rank must hold rank 0's ``value`` (JSON); otherwise every rank stops, saying which differ."""
        if not self.distributed:
            return
        expected = self.decide(f"agree/{name}", lambda: value)
        differ = sorted(self._problems(f"agree/{name}", json.loads(json.dumps(value)) != expected))
        if differ:
            raise DistributedError(f"ranks {differ} resolved other {what} than rank 0 (e.g. a checkpoint folder or "
                                   f"plugin that only some machines have): rank 0 has {expected}")

    def _problems(self, name: str, problem) -> dict[int, Any]:
        """Every rank says what is wrong here (a falsy ``problem``: nothing) and waits for the others; every rank
        gets the same {rank: problem}, so all stop together and none waits for a rank that stopped."""
        if problem:
            self.note(f"problem/{name}", self.rank, {"problem": problem})
        self.barrier(f"problem/{name}")
        return {r: note["problem"] for r in range(self.size) if (note := self.noted(f"problem/{name}", r))}

    def note(self, kind: str, index: int, record: dict) -> None:
        """Share a small record about unit ``index`` (e.g. a learner that failed); the first one stays."""
        key = self._key(f"note/{kind}/{index}")
        if not self.store.check([key]):
            self.store.set(key, json.dumps(record))

    def noted(self, kind: str, index: int) -> dict | None:
        key = self._key(f"note/{kind}/{index}")
        return json.loads(self.store.get(key)) if self.store.check([key]) else None

    def check_shared(self, folders: dict[str, Path]) -> None:
        """Refuse to start unless every rank sees the same ``folders`` (output folder, cache): rank 0 writes a
        token in each; every other rank must read it back."""
        if not self.distributed:
            return
        tokens = self.decide("shared", lambda: {what: _write_token(Path(p)) for what, p in folders.items()})
        missing = []
        for what, token in tokens.items():
            path = Path(folders[what]) / f".robrep-shared-{token}"
            deadline = time.monotonic() + 30  # network file systems may show a new file late
            while not path.is_file() and time.monotonic() < deadline:
                time.sleep(0.5)
            if not path.is_file():
                missing.append(f"{what} {folders[what]}")
        unshared = self._problems("shared", missing)
        if self.is_writer:
            for what, token in tokens.items():
                (Path(folders[what]) / f".robrep-shared-{token}").unlink(missing_ok=True)
        if unshared:  # every rank stops, so none waits for the others
            said = "; ".join(f"rank {r} in {', '.join(m)}" for r, m in sorted(unshared.items()))
            raise DistributedError(f"some ranks do not see what rank 0 wrote: {said}. Every rank must share the "
                                   "output folder and robrep's cache (ROBREP_CACHE), e.g. on a network file "
                                   "system mounted at the same path on every machine")


def _write_token(folder: Path) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    token = secrets.token_hex(8)
    (folder / f".robrep-shared-{token}").write_text(token)
    return token


__all__ = ["DistributedError", "World"]
