"""robrep bench and robrep train on real torch.distributed processes (torchrun, gloo, one thread each).

The reference is one process of ``robrep bench`` with the same options; a run on N ranks must give
the same rows, key by key, with every number equal (checkpoints trained by another rank included).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pandas as pd
import pytest

from robrep.distributed import World
from robrep.harness.store import ResultsStore, post
from robrep.rows import PER_RUN, read_results, row_key

pytestmark = pytest.mark.slow  # every test starts real processes (torchrun, several ranks)

OPTIONS = ["--learner", "vae", "--learner", "se-random", "--suite", "native", "--suite", "foolbox", "--epochs", "1",
           "--n-examples", "60", "--steps", "10", "--restarts", "1", "--radii", "0,0.05,0.1"]


def _env(cache: Path, **extra) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ROBREP_CACHE": str(cache), "COLUMNS": "200", **extra}
    env.pop("WORLD_SIZE", None)
    return env


def _bench(out: Path, cache: Path, nproc: int = 1, options=OPTIONS, **kwargs):
    launch = [sys.executable, "-m", "robrep"] if nproc == 1 else \
        [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", "-m", "robrep"]
    return subprocess.run([*launch, "bench", *options, "--out", str(out)], env=_env(cache), capture_output=True,
                          text=True, timeout=900, **kwargs)


def _rows(path: Path) -> dict[str, dict]:
    df = read_results(path)
    rows = {row_key(r): {k: v for k, v in r.items() if k not in PER_RUN} for r in df.to_dict("records")}
    assert len(rows) == len(df), "a key appears twice in results.csv"
    assert not df.attrs.get("invalid"), df.attrs["invalid"]
    return rows


def _value(v):
    """A field as read back from a CSV: numbers compare as numbers (a column with blanks reads as float)."""
    try:
        return float(v)
    except (TypeError, ValueError):
        return str(v)


def _assert_same(got: dict, want: dict) -> None:
    assert set(got) == set(want), f"missing {len(set(want) - set(got))}, extra {len(set(got) - set(want))}"
    for key, row in want.items():
        diff = {c: (row[c], got[key][c]) for c in row if _value(row[c]) != _value(got[key][c])
                and not (row[c] != row[c] and got[key][c] != got[key][c])}  # NaN == NaN: both blank
        assert not diff, f"{key}: {diff}"


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """One process, one thread: the rows every distributed run must reproduce, and the cache it trained."""
    root = tmp_path_factory.mktemp("reference")
    res = _bench(root / "out", root / "cache")
    assert res.returncode == 0, res.stdout + res.stderr
    rows = _rows(root / "out" / "results.csv")
    suites = {json.loads(k)[3] for k in rows}
    assert suites == {"native", "foolbox", "worst-case"} and len({json.loads(k)[0] for k in rows}) == 2
    return rows, root / "cache"


def test_two_ranks_give_the_single_process_rows_and_checkpoints(reference, tmp_path):
    want, _ = reference
    res = _bench(tmp_path / "out", tmp_path / "cache", nproc=2)  # a fresh cache: the ranks train both learners
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    _assert_same(_rows(tmp_path / "out" / "results.csv"), want)  # encoder_sha256 is in the key: same checkpoints
    assert not list((tmp_path / "out" / "inbox").glob("*.json")), "posted cells were left uncollected"
    assert "adversarial accuracy" in res.stdout and res.stdout.count("adversarial accuracy: mnist5k") == 1


def _worker_pids(tag: str) -> dict[int, int]:
    """{rank: pid} of the torchrun workers started with ROBREP_TEST_TAG=tag."""
    found = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            env = dict(item.split("=", 1) for item in (proc / "environ").read_text().split("\0") if "=" in item)
        except OSError:
            continue
        if env.get("ROBREP_TEST_TAG") == tag and "RANK" in env and "TORCHELASTIC_RUN_ID" in env:
            found[int(env["RANK"])] = int(proc.name)
    return found


def test_a_rank_killed_mid_run_loses_and_duplicates_nothing_when_the_command_is_rerun(reference, tmp_path):
    want, cache = reference
    out, tag = tmp_path / "out", uuid.uuid4().hex
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "robrep",
              "bench", *OPTIONS, "--out", str(out)]
    proc = subprocess.Popen(launch, env=_env(cache, ROBREP_TEST_TAG=tag), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    killed = False
    deadline = time.monotonic() + 600
    while proc.poll() is None and time.monotonic() < deadline:
        if list((out / "examples").rglob("*.safetensors")):  # a cell is finished: the run is mid-way
            pids = _worker_pids(tag)
            if 1 in pids:
                os.kill(pids[1], signal.SIGKILL)
                killed = True
                break
        time.sleep(0.05)
    log = proc.communicate(timeout=600)[0]
    assert killed, "the run finished before a rank could be killed; make the config larger\n" + log[-2000:]
    assert proc.returncode != 0, log[-2000:]
    partial = read_results(out / "results.csv") if (out / "results.csv").is_file() else pd.DataFrame()
    assert len(partial) < len(want), "the kill came too late to test anything"

    res = _bench(out, cache, nproc=2)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    _assert_same(_rows(out / "results.csv"), want)
    assert not list((out / "inbox").glob("*.json"))
    store = ResultsStore(out)
    try:
        assert len(store.frame()) == len(want)
    finally:
        store.close()


def test_more_ranks_than_cells(reference, tmp_path):
    _, cache = reference
    options = ["--learner", "vae", "--suite", "native", *OPTIONS[OPTIONS.index("--epochs"):]]
    one = _bench(tmp_path / "one", cache, nproc=1, options=options)
    assert one.returncode == 0, one.stdout[-3000:] + one.stderr[-3000:]
    res = _bench(tmp_path / "out", cache, nproc=3, options=options)  # one job, one cell, three ranks
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    got = _rows(tmp_path / "out" / "results.csv")
    assert len(got) == 3 and {json.loads(k)[3] for k in got} == {"native"}
    _assert_same(got, _rows(tmp_path / "one" / "results.csv"))


def test_ddp_training_matches_one_process_up_to_its_noise(tmp_path):
    """torchrun -m robrep train: two ranks share each minibatch; the losses stay within 1% of one process's."""
    from robrep.checkpoint import read_config

    cmd = ["train", "--learner", "vae", "--epochs", "2"]
    one = subprocess.run([sys.executable, "-m", "robrep", *cmd, "--out", str(tmp_path / "one")],
                         env=_env(tmp_path / "cache"), capture_output=True, text=True, timeout=600)
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                          "-m", "robrep", *cmd, "--out", str(tmp_path / "two")],
                         env=_env(tmp_path / "cache"), capture_output=True, text=True, timeout=600)
    assert one.returncode == 0 and two.returncode == 0, two.stdout[-2000:] + two.stderr[-2000:]
    assert "on 2 processes (DistributedDataParallel)" in two.stdout
    h1, h2 = (read_config(tmp_path / d)["history"] for d in ("one", "two"))
    assert len(h1) == len(h2) == 2
    for a, b in zip(h1, h2):
        assert abs(a["loss"] - b["loss"]) / a["loss"] < 0.01, (h1, h2)
    assert read_config(tmp_path / "two")["processes"] == 2


def test_work_is_handed_out_once_and_decisions_are_shared():
    world = World()
    world.begin()
    assert list(world.units("cells", 3)) == [0, 1, 2] and list(world.units("cells", 3)) == []
    assert world.decide("plan", lambda: {"cells": [[0, 1, 2]]}) == {"cells": [[0, 1, 2]]}
    world.note("skip", 4, {"error": "first"})
    world.note("skip", 4, {"error": "second"})
    assert world.noted("skip", 4) == {"error": "first"} and world.noted("skip", 5) is None
    world.begin()  # a new bench call starts from zero
    assert list(world.units("cells", 1)) == [0]


def test_a_damaged_posted_cell_is_kept_aside_not_lost(tmp_path, mnist5k):
    out = tmp_path / "out"
    (out / "inbox").mkdir(parents=True)
    (out / "inbox" / "cut.json").write_text('[{"learner": "vae", "ra')
    store = ResultsStore(out)
    try:
        assert store.collect() == 0
    finally:
        store.close()
    assert (out / "inbox" / "rejected" / "cut.json").read_text().startswith('[{"learner"')
    with pytest.raises(ValueError):
        post(out, "bad", pd.DataFrame([{"learner": "vae"}]))  # a row without its fields is refused where it is made


def test_a_learner_that_fails_on_one_rank_is_skipped_by_all_and_reported_once(reference, tmp_path):
    """A foreign encoder whose features turn non-finite: skipped on every rank, the rest completes, exit 1."""
    _, cache = reference
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "broken_enc.py").write_text(
        "import torch\nfrom torch import nn\n\n"
        "class Broken(nn.Module):\n"
        "    def __init__(self):\n        super().__init__()\n        self.lin = nn.Linear(784, 4)\n\n"
        "    def forward(self, x):\n        return self.lin(x.flatten(1)) / 0.0\n")
    options = ["--learner", "vae", "--learner", "broken_enc:Broken", "--suite", "native",
               *OPTIONS[OPTIONS.index("--epochs"):]]
    env = _env(cache, PYTHONPATH=str(tmp_path / "site"))
    res = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                          "-m", "robrep", "bench", *options, "--out", str(tmp_path / "out")],
                         env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 1, res.stdout[-3000:] + res.stderr[-3000:]
    assert res.stdout.count("1 learner(s) skipped") == 1 and "broken_enc:Broken" in res.stdout
    got = _rows(tmp_path / "out" / "results.csv")
    assert {json.loads(k)[3] for k in got} == {"native"} and len(got) == 3  # the vae's cell, all radii


DDP_STEP = '''
import json, sys, torch, robrep
from robrep.distributed import World
from robrep.train import train
torch.randn_like = lambda t, *a, **k: torch.zeros_like(t)  # a noise-free VAE loss: DDP must give one process's step
world = World.current("cpu")
ds = robrep.load_dataset("mnist5k")
ddp = train("vae", ds, out=False, max_steps=3, world=world, epochs=1, batch_size=51)  # shares of 26 and 25
if world.rank == 0:
    one = train("vae", ds, out=False, max_steps=3, epochs=1, batch_size=51)
    torch.manual_seed(0)
    init = robrep.learners.create_learner("vae", shape=ds.shape, epochs=1, batch_size=51)
    flat = lambda m: torch.cat([p.detach().flatten() for p in m.parameters()])
    diff = ((flat(ddp) - flat(one)).norm() / (flat(one) - flat(init)).norm()).item()  # relative to the update
    print("RESULT", json.dumps({"diff": diff, "history": [ddp.run_info["history"], one.run_info["history"]]}))
World.shutdown()
'''


def test_a_ddp_step_is_the_single_process_step(tmp_path):
    """With the loss's noise switched off, three DDP steps on 2 ranks (unequal shares of each minibatch) give the
    weights and the logged losses of three single-process steps, up to float summation order."""
    script = tmp_path / "ddp_step.py"
    script.write_text(DDP_STEP)
    res = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                          str(script)], env=_env(tmp_path / "cache"), capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    out = json.loads(next(line for line in res.stdout.splitlines() if line.startswith("RESULT"))[7:])
    assert out["diff"] < 1e-3, out  # the updates agree to 0.1% (Adam amplifies rounding in near-zero gradients)
    (h_ddp,), (h_one,) = out["history"]
    for k in h_one:
        assert h_ddp[k] == pytest.approx(h_one[k], rel=1e-5), (h_ddp, h_one)


def test_cells_of_a_ready_learner_run_while_another_rank_still_prepares(reference, tmp_path):
    """A job's cells are queued the moment it is prepared: with a learner that takes 12 s to build, the other rank
    attacks the VAE's cells meanwhile instead of waiting for every job to be prepared."""
    from datetime import datetime

    _, cache = reference
    (tmp_path / "site").mkdir()
    ready = tmp_path / "slow-ready"
    (tmp_path / "site" / "slow_enc.py").write_text(
        "import time\nfrom pathlib import Path\nfrom torch import nn\n\n"
        "class Slow(nn.Module):\n"
        "    def __init__(self):\n        super().__init__()\n        time.sleep(12)\n"
        "        self.lin = nn.Linear(784, 8)\n"
        f"        with open({str(ready)!r}, 'a') as f:\n            f.write(f'{{time.time()}}\\n')\n\n"
        "    def forward(self, x):\n        return self.lin(x.flatten(1))\n")
    options = ["--learner", "vae", "--learner", "slow_enc:Slow", "--suite", "native", "--suite", "foolbox",
               *OPTIONS[OPTIONS.index("--epochs"):]]
    res = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                          "-m", "robrep", "bench", *options, "--out", str(tmp_path / "out")],
                         env=_env(cache, PYTHONPATH=str(tmp_path / "site")), capture_output=True, text=True,
                         timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    df = read_results(tmp_path / "out" / "results.csv")
    vae = df[(df["label"] == "vae") & (df["suite"] != "worst-case")]
    started = [datetime.strptime(t, "%Y-%m-%dT%H:%M:%S%z").timestamp() for t in vae["timestamp"]]
    first_ready = min(float(t) for t in ready.read_text().split())  # when Slow was first built
    assert len(vae) == 15 and min(started) < first_ready - 1, (sorted(started), first_ready)


def _two_nodes(out: Path, caches: tuple[Path, Path], options: list[str],
               extra_env: tuple[dict, dict] = ({}, {})) -> list[subprocess.CompletedProcess]:
    """Two torchrun agents on this machine joined by c10d rendezvous, as two nodes of a cluster would be."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    procs = []
    for node, (cache, extra) in enumerate(zip(caches, extra_env)):
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--nproc_per_node=1", f"--node_rank={node}",
               "--rdzv_backend=c10d", f"--rdzv_endpoint=127.0.0.1:{port}", f"--rdzv_id=robrep-test-{port}",
               "-m", "robrep", "bench", *options, "--out", str(out)]
        procs.append(subprocess.Popen(cmd, env=_env(cache, **extra), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True))
    results = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=600)
        results.append(subprocess.CompletedProcess(p.args, p.returncode, stdout, stderr))
    return results


def test_two_nodes_sharing_the_folders_give_the_single_process_rows(reference, tmp_path):
    want, cache = reference
    first, second = _two_nodes(tmp_path / "out", (cache, cache), OPTIONS)
    assert first.returncode == 0 and second.returncode == 0, first.stdout[-2000:] + first.stderr[-2000:]
    _assert_same(_rows(tmp_path / "out" / "results.csv"), want)


def test_a_node_that_does_not_see_the_cache_refuses_to_start_and_says_which(reference, tmp_path):
    _, cache = reference
    first, second = _two_nodes(tmp_path / "out", (cache, tmp_path / "elsewhere"), OPTIONS)
    assert first.returncode != 0 and second.returncode != 0
    said = first.stdout + first.stderr + second.stdout + second.stderr
    assert "do not see what rank 0 wrote: rank 1 in cache" in said and "ROBREP_CACHE" in said, said[-3000:]
    assert not (tmp_path / "out" / "results.csv").exists()  # nothing was trained or attacked


def test_nodes_that_resolve_other_learners_all_stop_before_any_work(reference, tmp_path):
    """A plugin only one machine has: that node resolves two learners, the other one; both stop, saying so."""
    _, cache = reference
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "only_here.py").write_text(
        "from torch import nn\n\nclass Enc(nn.Module):\n    def __init__(self):\n        super().__init__()\n"
        "        self.lin = nn.Linear(784, 4)\n\n    def forward(self, x):\n        return self.lin(x.flatten(1))\n")
    options = ["--learner", "vae", "--learner", "only_here:Enc", *OPTIONS[OPTIONS.index("--suite"):]]
    first, second = _two_nodes(tmp_path / "out", (cache, cache), options,
                               ({"PYTHONPATH": str(tmp_path / "site")}, {}))
    said = first.stdout + first.stderr + second.stdout + second.stderr
    assert first.returncode != 0 and second.returncode != 0, said[-3000:]
    assert "resolved other learners and data sets than rank 0" in " ".join(said.split()), said[-3000:]
    assert not (tmp_path / "out" / "results.csv").exists()


def test_a_rank_that_fails_stops_the_ranks_waiting_for_it():
    """Two ranks on one store: after rank 0 says it failed, rank 1's barrier, decision and queue waits raise at
    once instead of waiting ROBREP_DIST_TIMEOUT."""
    from robrep.distributed import DistributedError, _LocalStore

    store = _LocalStore()
    zero, one = World(0, 2, store=store), World(1, 2, store=store)
    zero.begin(), one.begin()
    zero.fail("OSError: disk full")
    t0 = time.monotonic()
    for wait in (lambda: one.barrier("x"), lambda: one.decide("y", dict),
                 lambda: next(one.take("cells", closed=lambda: False))):
        with pytest.raises(DistributedError, match="rank 0: OSError: disk full"):
            wait()
    assert time.monotonic() - t0 < 5


def test_stacked_tasks_on_two_ranks_give_the_single_process_rows(tmp_path):
    """``--stack-tasks`` on two ranks (a unit is a learner's tasks, robrep's PGD stacked across them): the rows of
    one process attacking one task at a time."""
    options = [*OPTIONS, "--dataset", "colormnist5k"]
    one = _bench(tmp_path / "one", tmp_path / "cache", options=options)
    assert one.returncode == 0, one.stdout[-3000:] + one.stderr[-3000:]
    two = _bench(tmp_path / "two", tmp_path / "cache", nproc=2, options=[*options, "--stack-tasks"])
    assert two.returncode == 0, two.stdout[-3000:] + two.stderr[-3000:]
    want = _rows(tmp_path / "one" / "results.csv")
    assert {json.loads(k)[2] for k in want} >= {"digit", "color"}
    _assert_same(_rows(tmp_path / "two" / "results.csv"), want)
