"""CelebA at real scale, on a full-size stand-in: what the reader, training and the 17-task bench cost.

    python benchmarks/celeba_scale.py --root /data/celeba-standin [--n 202599] [--skip-single] [--steps 30]

The real CelebA cannot be downloaded here; its layout and size can be reproduced exactly
(``robrep.data.celeba_standin``: 202,599 drawn 178 x 218 JPEG faces whose drawn features set their
attributes, the two lists, the real partition sizes). ``--root`` must be outside the repository;
the stand-in is written there once (``--n`` images; the default is CelebA's full size) and reused.
Every measurement runs in a fresh process (so its peak resident memory is its own), with its own
robrep cache beside the stand-in (``<root>.cache``), and prints:

1. writing the stand-in (only when it is not there yet);
2. decoding and caching train + test (64 x 64 uint8): in parallel processes (robrep's default) and,
   unless ``--skip-single``, in one process, side by side: seconds, peak resident memory of the
   process and of its largest worker, against the size of the uint8 arrays, and the cache on disk;
3. reloading the cache (memory-mapped) and reading every image of it once;
4. features of the training split (the encoder's mean) for the MLP and the ConvNet at 64 x 64;
5. fitting the 17 linear probes on the MLP's features;
6. training steps of the VAE and the SE (one FGSM-RS step, one warm-started step, the paper's L = 20),
   MLP and ConvNet: ``--steps`` steps timed and extrapolated to an epoch of the training split;
7. one attack cell per suite (native, torchattacks, foolbox): the MLP VAE of step 6, a probe for
   Smiling, ``--attack-points`` test faces at radius 0.1, every attack of the suite at 100 x 10.

Prints numbers; asserts nothing about speed. Seconds depend on the machine and on what else runs.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def peak_mib(who=resource.RUSAGE_SELF) -> float:
    return resource.getrusage(who).ru_maxrss / 1024  # Linux: KiB


def rss_mib() -> float:
    """Resident memory now (Linux)."""
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


# ---- the measurements, each in its own process (``--part NAME``) ----

def part_decode(root: str) -> dict:
    import robrep

    base = rss_mib()  # an idle process with robrep (and torch) imported
    t0 = time.perf_counter()
    ds = robrep.load_dataset("celeba", root=root)
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "n_train": len(ds.train), "n_test": len(ds.test), "base_mib": base,
            "uint8_mib": (ds.train.images.numel() + ds.test.images.numel()) / 2**20,
            "peak_mib": peak_mib(), "worker_peak_mib": peak_mib(resource.RUSAGE_CHILDREN)}


def part_reload(root: str) -> dict:
    import robrep

    base = rss_mib()
    t0 = time.perf_counter()
    ds = robrep.load_dataset("celeba", root=root)
    opened = time.perf_counter() - t0
    t0 = time.perf_counter()
    total = 0
    for split in (ds.train, ds.test):
        for i in range(0, len(split), 4096):
            total += int(split.images[i:i + 4096].sum(dtype=__import__("torch").int64))
    return {"open_seconds": opened, "read_seconds": time.perf_counter() - t0, "peak_mib": peak_mib(), "base_mib": base,
            "checksum": total}


def part_features(root: str, threads: int) -> dict:
    import torch

    import robrep
    from robrep.data.celeba import DEFAULT_TASKS
    from robrep.probes import features, train_probe

    torch.set_num_threads(threads)
    ds = robrep.load_dataset("celeba", root=root)
    out = {}
    for arch in ("mlp", "conv"):
        torch.manual_seed(0)
        model = robrep.create_learner("vae", shape=ds.shape, arch=arch, likelihood="gaussian").eval()
        t0 = time.perf_counter()
        with torch.no_grad():
            feats = features(model, ds.train.images)
        out[f"features_{arch}_seconds"] = time.perf_counter() - t0
        if arch == "mlp":
            t0 = time.perf_counter()
            for task in DEFAULT_TASKS:
                train_probe(feats, ds.train.labels[task], 2)
            out["probes_seconds"] = time.perf_counter() - t0
            out["n_tasks"] = len(DEFAULT_TASKS)
    out["n_train"], out["peak_mib"] = len(ds.train), peak_mib()
    return out


def part_train(root: str, threads: int, steps: int) -> dict:
    import torch

    import robrep

    torch.set_num_threads(threads)
    ds = robrep.load_dataset("celeba", root=root)
    per_epoch = -(-len(ds.train) // 128)  # minibatches of 128 (the learners' default)
    out = {"steps": steps, "steps_per_epoch": per_epoch}
    for arch in ("mlp", "conv"):
        for label, learner, cfg in (("vae", "vae", {}), ("se-fgsm", "se-fgsm", {}), ("se-warm", "se-warm", {}),
                                    ("se-L20", "se-adversarial", {"selection_steps": 20, "selection_start": "random"})):
            robrep.train(learner, ds, out=False, max_steps=2, seed=0, arch=arch, likelihood="gaussian", **cfg)
            t0 = time.perf_counter()  # timed after two warm-up steps
            robrep.train(learner, ds, out=False, max_steps=steps, seed=0, arch=arch, likelihood="gaussian", **cfg)
            out[f"{arch}_{label}_step_seconds"] = (time.perf_counter() - t0) / steps
    out["peak_mib"] = peak_mib()
    return out


def part_attack(root: str, threads: int, points: int) -> dict:
    import torch

    import robrep
    from robrep.attacks import suite_attacks
    from robrep.probes import ProbedEncoder, features, train_probe

    torch.set_num_threads(threads)
    ds = robrep.load_dataset("celeba", root=root)
    model = robrep.train("vae", ds, out=False, max_steps=200, seed=0, arch="mlp", likelihood="gaussian")
    y_train = ds.train.labels["Smiling"]
    probe = train_probe(features(model, ds.train.images[:20000]), y_train[:20000], 2)
    probed = ProbedEncoder(model, probe)
    x, y = ds.test.batch(slice(0, points)), ds.test.labels["Smiling"][:points]
    out = {"points": points}
    for suite in ("native", "torchattacks", "foolbox"):
        t0 = time.perf_counter()
        acc = {}
        for attack in suite_attacks([suite], 2, steps=100, restarts=10, norm="linf"):
            res = attack.run(probed, x, y, [0.0, 0.1], seed=0)
            acc[attack.name] = round(float(res.accuracy(0.1)), 3)
        out[f"{suite}_seconds"], out[f"{suite}_accuracy"] = time.perf_counter() - t0, acc
        out["nominal"] = round(float(res.accuracy(0.0)), 3)
    out["peak_mib"] = peak_mib()
    return out


PARTS = {"decode": part_decode, "reload": part_reload, "features": part_features, "train": part_train,
         "attack": part_attack}


def run_part(name: str, args, env: dict) -> dict:
    cmd = [sys.executable, __file__, "--part", name, "--root", str(args.root), "--threads", str(args.threads),
           "--steps", str(args.steps), "--attack-points", str(args.attack_points)]
    got = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if got.returncode != 0:
        sys.exit(f"part {name} failed:\n{got.stderr[-4000:]}")
    return json.loads(got.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--root", type=Path, required=True, help="where the stand-in is (or is written); not in the repo")
    ap.add_argument("--n", type=int, default=202_599, help="images in the stand-in (default: CelebA's 202,599)")
    ap.add_argument("--skip-single", action="store_true", help="do not also decode in one process")
    ap.add_argument("--steps", type=int, default=20, help="training steps timed per learner and architecture")
    ap.add_argument("--attack-points", type=int, default=100)
    ap.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    ap.add_argument("--part", choices=sorted(PARTS), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.part:  # a child: one measurement, one JSON line
        kw = {"decode": {}, "reload": {}, "features": {"threads": args.threads},
              "train": {"threads": args.threads, "steps": args.steps},
              "attack": {"threads": args.threads, "points": args.attack_points}}[args.part]
        print(json.dumps(PARTS[args.part](str(args.root), **kw)))
        return

    root = args.root.resolve()
    if root == REPO or REPO in root.parents:
        sys.exit(f"--root {root} is inside the repository; the stand-in is {args.n:,} JPEGs: put it elsewhere")
    sys.path.insert(0, str(REPO))
    from robrep.data.celeba import ATTR_FILE, IMAGES, decode_workers
    from robrep.data.celeba_standin import partition_sizes, write_standin

    cores = decode_workers()
    print(f"CelebA stand-in at {root}; {cores} usable cores; {args.threads} torch threads\n")
    listed = root / ATTR_FILE
    if not listed.exists() or int(listed.read_text().split("\n", 1)[0]) != args.n:
        print(f"1. writing {args.n:,} images ({', '.join(f'{k:,}' for k in partition_sizes(args.n))}) ...", flush=True)
        shutil.rmtree(root, ignore_errors=True)
        t0 = time.perf_counter()
        write_standin(root, args.n)
        dt = time.perf_counter() - t0
        print(f"   {dt:.0f} s ({args.n / dt:.0f} images/s, {cores} processes), "
              f"{folder_bytes(root / IMAGES) / 2**30:.2f} GiB of JPEGs\n")
    else:
        print(f"1. stand-in of {args.n:,} images already there ({folder_bytes(root / IMAGES) / 2**30:.2f} GiB)\n")

    cache = Path(str(root) + ".cache")
    env = {**os.environ, "ROBREP_CACHE": str(cache), "PYTHONPATH": str(REPO)}
    print("2. decode and cache train + test (64 x 64 uint8), from an empty cache", flush=True)
    modes = [("parallel", cores)] + ([] if args.skip_single else [("one process", 1)])
    decoded = {}
    for label, workers in modes:
        shutil.rmtree(cache, ignore_errors=True)
        d = run_part("decode", args, {**env, "ROBREP_DECODE_WORKERS": str(workers)})
        decoded[label] = d
        grown = d["peak_mib"] - d["base_mib"]
        print(f"   {label:12s} ({workers} worker{'s' * (workers > 1)}): {d['seconds']:7.1f} s "
              f"({(d['n_train'] + d['n_test']) / d['seconds']:.0f} images/s); peak memory {d['peak_mib']:,.0f} MiB, "
              f"{grown:,.0f} MiB above an idle robrep process ({d['base_mib']:,.0f} MiB), for {d['uint8_mib']:,.0f} MiB "
              f"of uint8 images ({grown / d['uint8_mib']:.2f}x); largest worker {d['worker_peak_mib']:,.0f} MiB "
              f"(most of it shared with the parent); cache on disk {folder_bytes(cache) / 2**20:,.0f} MiB", flush=True)
    if len(decoded) == 2:
        print(f"   parallel decode is {decoded['one process']['seconds'] / decoded['parallel']['seconds']:.2f}x "
              "faster than one process")
    r = run_part("reload", args, env)
    print(f"\n3. reload (memory-mapped): {r['open_seconds']:.2f} s to open; reading every image once "
          f"{r['read_seconds']:.1f} s; peak memory {r['peak_mib']:,.0f} MiB ({r['peak_mib'] - r['base_mib']:,.0f} MiB "
          f"above idle: the pages read stay mapped until the system needs them)", flush=True)
    f = run_part("features", args, env)
    print(f"\n4. features of the {f['n_train']:,} training images: MLP {f['features_mlp_seconds']:.1f} s, "
          f"ConvNet {f['features_conv_seconds']:.1f} s (64 x 64, batches of 1,000); peak memory {f['peak_mib']:,.0f} MiB")
    print(f"\n5. {f['n_tasks']} linear probes on the MLP's features: {f['probes_seconds']:.1f} s", flush=True)
    t = run_part("train", args, env)
    print(f"\n6. training, {t['steps']} steps of 128 timed, extrapolated to an epoch ({t['steps_per_epoch']:,} steps); "
          f"peak memory {t['peak_mib']:,.0f} MiB")
    for arch in ("mlp", "conv"):
        for label in ("vae", "se-fgsm", "se-warm", "se-L20"):
            s = t[f"{arch}_{label}_step_seconds"]
            print(f"   {arch:4s} {label:9s} {s * 1000:7.0f} ms/step  epoch {s * t['steps_per_epoch'] / 60:7.1f} min")
    a = run_part("attack", args, env)
    print(f"\n7. one attack cell per suite: {a['points']} test faces, task Smiling, radius 0.1, 100 x 10; "
          f"MLP VAE after 200 steps (nominal {a['nominal']})")
    for suite in ("native", "torchattacks", "foolbox"):
        print(f"   {suite:13s} {a[f'{suite}_seconds']:7.1f} s  accuracy at 0.1: {a[f'{suite}_accuracy']}")


if __name__ == "__main__":
    main()
