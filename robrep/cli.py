"""The ``robrep`` command. It only parses arguments, calls the library and draws on the terminal."""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import os
import sys
from pathlib import Path

from rich.console import Console
from rich.logging import RichHandler
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from robrep.escape import first_sentence, terminal  # names and messages from files, as literal text

console = Console()
DEFAULT_LEARNER = "se-adversarial"


def _progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(bar_width=24), MofNCompleteColumn(),
        TimeRemainingColumn(), TextColumn("{task.fields[parts]}"),
        console=console,
    )


def cmd_train(args: argparse.Namespace) -> int:
    import robrep
    from robrep.learners import create_learner

    from robrep.threads import use_threads

    use_threads(args.threads)
    from robrep.learners import check_overrides

    overrides = check_overrides(args.learner, dict(args.set))
    if args.epochs is not None:
        overrides["epochs"] = args.epochs
    if args.arch is not None:
        overrides["arch"] = args.arch
    ds = robrep.load_dataset(args.dataset, root=args.data_root, download=args.download)
    create_learner(args.learner, shape=ds.shape, **overrides)  # the config checked before any data is touched
    world = _world(args.device)
    if world.rank != 0:  # under torchrun: every rank trains its share of each minibatch; rank 0 reports
        robrep.train(args.learner, ds, seed=args.seed, device=args.device, out=args.out, world=world,
                     force=args.force, **overrides)
        return 0
    with _bench_progress(cells=False) as progress:  # a bar on a terminal, a line per epoch elsewhere
        learner = robrep.train(args.learner, ds, seed=args.seed, device=args.device, out=args.out, progress=progress,
                               world=world, force=args.force, **overrides)
    info = learner.run_info
    if not info["history"]:  # fitted in closed form (e.g. a PCA plugin): no epochs to show
        console.print(f"fitted in {info['train_seconds']:.1f} s; saved to [bold]{info['path']}[/bold]")
        return 0
    table = Table(title=f"{args.learner} on {ds.name}", show_header=True)
    table.add_column("epoch", justify="right")
    parts = [k for k in info["history"][-1] if k != "epoch"]
    for k in parts:
        table.add_column(k, justify="right")
    for row in info["history"][-5:]:
        table.add_row(str(row["epoch"]), *(f"{row[k]:.3f}" for k in parts))
    console.print(table)
    on = f" on {world.size} processes (DistributedDataParallel)" if world.distributed else ""
    console.print(f"trained{on} in {info['train_seconds']:.1f} s; saved to [bold]{info['path']}[/bold]")
    return 0


def cmd_toy(args: argparse.Namespace) -> int:
    from robrep.toy import run_toy

    with console.status("training the toy VAE and Smooth Encoder"):
        png = run_toy(args.out, force=args.force)
    console.print(f"wrote [bold]{png}[/bold] and {Path(png).with_name('toy.csv')}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    import robrep
    import robrep.attacks  # noqa: F401  (registers attacks and suites)
    from robrep.registry import ATTACKS, DATASETS, LEARNERS, SUITES

    table = Table(title="robrep registry")
    for col in ("kind", "name", "from", "description", "family; paper"):
        table.add_column(col)
    from robrep.encoders import is_learner
    from robrep.learners import card

    for kind, reg in (("learner", LEARNERS), ("dataset", DATASETS), ("suite", SUITES), ("attack", ATTACKS)):
        for name in reg.list():
            entry = reg.get(name)
            shown = "encoder" if kind == "learner" and not is_learner(entry) else kind  # benchmarked as it is
            about = card(name) if kind == "learner" else None
            table.add_row(shown, name, reg.origin(name), terminal(first_sentence(entry.__doc__)),
                          terminal(about.describe()) if about else "")
    console.print(table)
    from robrep.plugins import failures

    for f in failures():
        console.print(f"[bold red]plugin failed[/bold red] {f.group} {f.name!r} from {f.distribution}: {f.error}")
    if os.environ.get("ROBREP_DISABLE_PLUGINS", "") not in ("", "0"):
        console.print("plugins are turned off (ROBREP_DISABLE_PLUGINS)")
    return 0


def _line(text: str) -> None:
    """A plain line, printed at once (not parsed for rich markup, never wrapped)."""
    console.print(text, markup=False, highlight=False, soft_wrap=True)
    console.file.flush()


from robrep.progress import Progress as Reported  # noqa: E402  (robrep's progress protocol; imports nothing heavy)


def _verify_for_board(items) -> None:
    """A run folder whose entries would stand on a standard board but for a verdict: ``robrep verify`` it first
    (the board admits a protocol's entry only with a verdict that held)."""
    from robrep.board.leaderboard import needs_verdict
    from robrep.rows.files import read_results
    from robrep.verify import verify

    for item in map(Path, items):
        if (item / "results.sqlite").is_file() and needs_verdict(read_results(item / "results.csv")):
            console.print(f"verifying {item} first (a standard board needs robrep verify's verdict)")
            with _bench_progress(cells=False) as progress:
                verify(item, progress=progress, margin=True)


def _submit(args: argparse.Namespace) -> int:
    from robrep.board.submission import make_submission

    entry = make_submission(args.submit, args.out)
    console.print(f"wrote the submission [bold]{args.out}[/bold]: fill in [bold]{entry}[/bold], then send the "
                  f"folder to the board's maintainers (they run: robrep leaderboard --admit {args.out})")
    return 0


def _admit(args: argparse.Namespace) -> None:
    """Re-check a submission whole (its entry, then every claim attacked again on its own checkpoints and
    probes), then publish it and record its entry; nothing is written if anything does not hold."""
    import tempfile

    from robrep.board.entries import add_entries, read_submission, write_entries
    from robrep.board.leaderboard import publish
    from robrep.board.submission import with_verdicts
    from robrep.rows.files import read_results, write_results
    from robrep.verify import verify

    sub = Path(args.admit)
    entry = read_submission(sub / "entry.toml")
    entries = add_entries(args.out, entry)  # a name clash refuses before any attack runs
    with _bench_progress(cells=False) as progress:
        verdicts = verify(sub, progress=progress, margin=True)
    rows = with_verdicts(read_results(sub / "results.csv"), verdicts)
    with tempfile.TemporaryDirectory() as tmp:
        write_results(Path(tmp) / "results.csv", rows)
        for path in publish([Path(tmp) / "results.csv"], out=args.out):
            console.print(f"admitted into [bold]{path}[/bold]")
    console.print(f"recorded the entry in [bold]{write_entries(args.out, entries)}[/bold]")


@contextlib.contextmanager
def _bench_progress(cells: bool = True):
    """Progress bars on a terminal, plain lines elsewhere (``robrep.progress``'s protocol)."""
    if not console.is_terminal:
        from robrep.progress import LineProgress

        yield LineProgress(_line)
        return
    with _progress() as progress:
        yield _RichBenchProgress(progress, cells)


class _RichBenchProgress(Reported):
    """Draws long work's progress: one bar over all cells (``cells``: a bench's), one for the current phase."""

    def __init__(self, progress: Progress, cells: bool = True):
        self.p = progress
        self.total_bar = progress.add_task("cells", total=None, parts="") if cells else None
        self.phase_bar = None

    def cells(self, total):
        if self.total_bar is not None:
            self.p.update(self.total_bar, total=total)

    def phase(self, description, total):
        if self.phase_bar is not None:
            self.p.remove_task(self.phase_bar)
        self.phase_bar = self.p.add_task(description, total=total, parts="")

    def advance(self, n=1, info=""):
        if self.phase_bar is not None:
            self.p.update(self.phase_bar, advance=n, parts=info)

    def completed(self, n):
        if self.total_bar is not None:
            self.p.update(self.total_bar, completed=n)


def _not_standard(cfg, df) -> str:
    """What a run that is not a board's protocol measured, in words a newcomer reads, and how to run the board's."""
    from robrep.protocols import PROTOCOLS

    attacks = df[df["suite"] != "worst-case"][["suite", "attack"]].drop_duplicates()
    what = ("one attack: each number is an upper bound on robust accuracy (a stronger attack can only lower it)"
            if len(attacks) == 1 else f"the worst case of {len(attacks)} attacks")
    board = next((p for p in PROTOCOLS.values() if p.dataset in cfg.datasets and p.norm == cfg.norm), None)
    how = (f"; the board {board.name} ranks its own protocol (ten attacks, {board.n_examples} test points): "
           f"robrep bench --protocol {board.name}" if board else "")
    return f"this run measured {what}{how}"


def _print_results(df) -> None:
    from robrep.harness import summary_table

    from robrep.board.tables import many_task_datasets, task_table

    many = many_task_datasets(df)
    for dataset in many:  # the paper's Table 1: tasks as rows, per learner nominal and adversarial accuracy
        tt = task_table(df[df["dataset"] == dataset])
        t = Table(title=f"{dataset}: nominal and adversarial accuracy at radius {tt.attrs['radius']:g}, "
                        f"{len(tt)} tasks")
        t.caption = "adversarial: the worst case over every attack of the run" + (
            f"; {', '.join(tt.attrs['single_attack'])}: the strongest single attack (an upper bound)"
            if tt.attrs["single_attack"] else "")
        t.add_column("task", overflow="fold")
        for learner, what in tt.columns:
            t.add_column(f"{terminal(learner)}\n{'nom.' if what == 'nominal' else 'adv.'}", justify="right")
        for task, vals in tt.iterrows():
            t.add_row(terminal(task), *("" if v != v else f"{v:.3f}" for v in vals))
        console.print(t)
    table = summary_table(df[~df["dataset"].isin(many)]) if len(many) < df["dataset"].nunique() else None
    several_runs = df.groupby("label")["run"].nunique().max() > 1
    for (dataset, task), sub in ([] if table is None else table.groupby(level=[0, 1])):
        t = Table(title=f"adversarial accuracy: {terminal(dataset)} / {terminal(task)}")
        if "protocol" in df and (df["protocol"] == "cascade").any():
            t.caption = ("cascade: an attack's row is the accuracy against it and every attack that ran before it "
                         "(cheap ones first); n_broken_first in results.csv says what each broke")
        protocols = sub.reset_index()[["n_examples", "label_fraction", "seed", "probe", "attack_config"]].drop_duplicates()
        several = {c: protocols[c].nunique() > 1 for c in ("n_examples", "label_fraction", "seed")}
        several["probe"] = set(protocols["probe"]) != {"standard"}
        cols = ["learner", *(("run",) if several_runs else ()), *(["points"] if several["n_examples"] else []),
                *(["labels"] if several["label_fraction"] else []), *(["seed"] if several["seed"] else []),
                *(["probe"] if several["probe"] else []), "suite", "attack"]
        for col in cols:
            t.add_column(col, overflow="fold")
        for r in sub.columns:
            t.add_column(f"r={r:g}", justify="right")
        order = sub.sort_index(level=[4, 5, 6, 7, 8, 9, 2, 3])
        for (_, _, suite, attack, learner, run, n, fraction, seed, probe, _), vals in order.iterrows():  # learner: label
            name = [learner, *((run,) if several_runs else ()), *([f"{n:g}"] if several["n_examples"] else []),
                    *([f"{fraction:g}"] if several["label_fraction"] else []), *([f"{seed:g}"] if several["seed"] else []),
                    *([probe] if several["probe"] else [])]
            style = "bold" if suite == "worst-case" else None
            t.add_row(*map(terminal, name), terminal(suite), terminal(attack),
                      *("" if v != v else f"{v:.3f}" for v in vals), style=style)
        console.print(t)
    from robrep.board.tables import failed_checks

    failed, which = failed_checks(df)
    if len(failed):
        console.print(f"[bold red]{len(failed)} row(s) failed a check[/bold red] ("
                      + ", ".join(f"{name}: {n}" for name, n in which.items()) + "): "
                      + terminal(", ".join(sorted(set(failed["label"] + "/" + failed["task"] + "/" + failed["attack"])))))
    else:
        console.print(f"all {len(df)} rows passed the checks (noise floor, convergence, explored, guards, "
                      "consistency)")
    if "warnings" in df:
        for _, row in df[df["warnings"].astype(object).fillna("").astype(str) != ""].iterrows():
            console.print(f"[yellow]warning[/yellow] {terminal(row['run'])} / {terminal(row['task'])} / "
                          f"r={row['radius']:g}: {terminal(row['warnings'])}")


def cmd_bench(args: argparse.Namespace) -> int:
    from robrep.harness import BenchConfig, bench

    given = config_values(args, BenchConfig)
    if args.eps is not None:
        given["eps"] = args.eps
    if args.budget and (args.steps or args.restarts):
        raise ValueError(f"--budget {args.budget} sets the steps and restarts; give it or --steps/--restarts, "
                         "not both")
    cfg = BenchConfig.from_toml(args.config, **given) if args.config else BenchConfig.from_values(given)
    if cfg.threads is None:
        from robrep.threads import default_threads

        cfg.threads = default_threads()  # the CLI chooses; bench applies it (and warns on a busy machine)
    if args.dry_run:  # under torchrun, rank 0 alone prints the plan
        return _print_plan(cfg, args.force) if os.environ.get("RANK", "0") == "0" else 0
    world = _world(cfg.device)
    if world.rank != 0:  # under torchrun: rank 0 draws, reports and gives the exit status; the others work quietly
        bench(cfg, strict=False, world=world, force=args.force)
        return 0  # a non-zero exit here would make torchrun stop rank 0 while it prints its report
    with _bench_progress() as progress:  # a learner that fails is skipped, the rest completes, and the exit status says so
        df = bench(cfg, progress=progress, strict=False, world=world, force=args.force)
    if df.empty:
        console.print("[bold red]no results[/bold red]")
    else:
        _print_results(df)
        out = Path(cfg.out)
        console.print(f"results: [bold]{out / 'results.csv'}[/bold]   plot: [bold]{out / 'robustness.png'}[/bold]")
        if cfg.protocol is None:
            console.print(_not_standard(cfg, df))
    skipped = df.attrs.get("skipped", [])
    if skipped:
        table = Table(title=f"{len(skipped)} learner(s) skipped", title_style="bold red")
        for col in ("learner", "dataset", "error"):
            table.add_column(col, overflow="fold")
        for skip in skipped:
            table.add_row(terminal(skip["learner"]), terminal(skip["dataset"] or "(all)"), terminal(skip["error"]))
        console.print(table)
    return 1 if skipped or df.empty else 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from robrep.harness.config import BenchConfig
    from robrep.sweep import sweep
    from robrep.threads import default_threads

    grid = {}
    for key, values in args.grid:
        if key in grid:
            raise ValueError(f"--grid {key} is given twice; give each key once with all its values")
        grid[key] = list(values) if isinstance(values, tuple) else [values]
    options = config_values(args, BenchConfig, ("suites", "n_examples", *SWEEP_SHARES))
    options["threads"] = options.get("threads") or default_threads()
    with _bench_progress() as progress:
        res = sweep(args.learner, grid, dataset=args.dataset, radius=args.radius, min_nominal=args.min_nominal,
                    base_config=dict(args.set), out=args.out, progress=progress, force=args.force, **options)
    t = Table(title=f"sweep of {args.learner} on {res.dataset} (validation split), worst case at radius {res.radius:g}",
              caption=f"chosen: the best worst case among configs with {res.rule}")
    tasks = [c[len("worst_case["):-1] for c in res.table.columns if c.startswith("worst_case[")]
    columns = ["config", "nominal", "worst case"]
    if len(tasks) > 1:
        columns += [f"{w} {t_}" for t_ in tasks for w in ("nominal", "worst")]
    for col in columns:
        t.add_column(col, justify="left" if col == "config" else "right")
    for label, row in res.table.iterrows():
        cells = [label.split(":", 1)[1], f"{row['nominal']:.3f}", f"{row['worst_case']:.3f}"]
        if len(tasks) > 1:
            cells += [f"{row[f'{w}[{t_}]']:.3f}" for t_ in tasks for w in ("nominal", "worst_case")]
        style = "bold green" if row["chosen"] else None if row["clears_floor"] else "dim"
        t.add_row(*cells, style=style)
    console.print(t)
    console.print(f"chosen: [bold]{res.label}[/bold]  ({args.out / 'choice.json'}, table {args.out / 'sweep.csv'})")
    return 0


def _world(device):
    """The processes of this command (several under torchrun); their log lines say which rank wrote them."""
    from robrep.distributed import World

    world = World.current(device)
    if world.distributed:
        for handler in logging.getLogger().handlers:
            handler.setFormatter(logging.Formatter(f"[rank {world.rank}/{world.size}] %(message)s"))
    return world


def _print_plan(cfg, force: bool = False) -> int:
    from robrep.harness.plan import plan

    cells = plan(cfg, force=force)
    table = Table(title=f"plan of {cfg.out}: nothing is trained or attacked (--dry-run)")
    for col in ("learner", "dataset", "learner", "run", "cells done", "cells to run"):
        table.add_column(col, overflow="fold")
    table.columns[2].header = "what happens to it"
    for (label, dataset, status, run), g in cells.groupby(["label", "dataset", "learner_status", "run"],
                                                          dropna=False, sort=False):
        done = int((g["status"] == "done").sum())
        table.add_row(str(label), str(dataset) if dataset == dataset else "", str(status),
                      str(run) if run == run else "", str(done), str(int((g["status"] == "to run").sum())))
    console.print(table)
    console.print(f"{int((cells['status'] == 'done').sum())} cell(s) done, "
                  f"{int((cells['status'] == 'to run').sum())} to run, "
                  f"{int(cells.loc[cells['learner_status'] == 'train', 'label'].nunique())} learner(s) to train")
    return 1 if (cells["status"] == "skipped").any() else 0  # as the bench would: a learner would be skipped


def cmd_leaderboard(args: argparse.Namespace) -> int:
    from robrep.folders import FolderError, check_folder
    from robrep.board.leaderboard import publish, read_boards, render_boards, resort

    if args.render or args.results or args.html or args.resort or args.admit:
        check_folder(args.out, "leaderboard")  # every write below goes into it
    elif args.out.exists() and not args.out.is_dir():
        raise FolderError(f"--out {args.out} is a file, not a leaderboard folder")
    if args.render:
        for path in render_boards(args.out):
            console.print(f"rendered [bold]{path.with_suffix('.md')}[/bold] and {path.with_suffix('.png')}")
        from robrep.board.blocks import render_files

        for path in render_files(args.out.resolve().parent, args.out):  # the README and docs beside the boards
            console.print(f"updated the generated numbers of [bold]{path}[/bold]")
    if args.submit:
        return _submit(args)
    if args.resort:
        for where, notes in resort(args.out).items():
            console.print(f"[bold]{len(notes)}[/bold] entr{'y' if len(notes) == 1 else 'ies'} moved to "
                          f"{args.out}/{where}/ (never ranked with a standard board); the first: {terminal(notes[0])}")
    if args.admit:
        _admit(args)
    if args.results:
        _verify_for_board(args.results)
        for path in publish(args.results, out=args.out, replace=args.replace):
            console.print(f"updated [bold]{path}[/bold] and {path.with_suffix('.md')}")
    if (args.results or args.admit or args.resort or args.render) and not list(args.out.glob("*.csv")):
        console.print(f"no entry stands on a standard board in {args.out} yet: see {args.out}/experiments/")
        return 0
    board = read_boards(args.out)
    if args.html:
        from robrep.board.site import write_site

        console.print(f"wrote [bold]{write_site(board, args.out)}[/bold] and its encoder pages")
    if args.detail:
        _print_results(board)
    else:
        _print_headline(board)
    return 0


def _print_headline(board) -> None:
    """The board's headline tables: one ranked row per encoder and protocol (robrep.board.headline)."""
    from robrep.board.headline import PLACE, checks_text, headline_table, place_title, radius_columns

    table = headline_table(board)
    radius_cols = radius_columns(table)
    for place, t in table.groupby(list(PLACE), sort=True):
        head = table.attrs["headline"][place]
        shown = [c for c in radius_cols if t[c].notna().any()]
        rt = Table(title=f"{terminal(place_title(place))}: ranked by robust accuracy at radius {head:g}",
                   caption="worst case over every attack of the protocol; 'single attack': an upper bound. "
                           "robrep leaderboard --detail: each attack's rows")
        for col in ("#", "encoder", "arch", "clean", *shown, "measure", "budget", "points", "labels", "checks"):
            rt.add_column(col, justify="right" if col in ("#", "clean", "points", "labels", *shown) else "left",
                          overflow="fold")
        for _, r in t.iterrows():
            rt.add_row(str(r["rank"]), terminal(r["label"]), terminal(r["arch"]), f"{r['clean']:.3f}",
                       *("" if r[c] != r[c] else f"{r[c]:.3f}" for c in shown), terminal(r["measure"]),
                       terminal(r["budget"]), str(r["n_examples"]), f"{r['label_fraction']:g}",
                       terminal(checks_text(r)),
                       style="bold" if r["rank"] == 1 else None)
        console.print(rt)


def cmd_verify(args: argparse.Namespace) -> int:
    from robrep.verify import verify

    with _progress() as bar:
        task = bar.add_task("verifying", total=None, parts="")

        class Bar(Reported):  # one bar over the claims' groups, the group being verified beside it
            def cells(self, total):
                bar.update(task, total=total)

            def phase(self, description, total):
                bar.update(task, parts=description)

            def completed(self, n):
                bar.update(task, completed=n)

        verdicts = verify(args.results, steps=args.steps, restarts=args.restarts, tolerance=args.tolerance,
                          margin=args.margin,
                          device=args.device, data_root=args.data_root, progress=Bar())
    t = Table(title=f"robrep verify {args.results} (tolerance {args.tolerance:g})")
    for col in ("encoder", "task", "attack", "radius", "published", "independent", "holds"):
        t.add_column(col, overflow="fold", justify="right" if col in ("radius", "published", "independent") else "left")
    for v in verdicts:
        r = v.row
        t.add_row(terminal(r.get("label") or r["run"]), terminal(r["task"]), terminal(r["attack"]), f"{r['radius']:g}",
                  f"{r['adversarial_accuracy']:.3f}", "" if v.verified_accuracy is None else f"{v.verified_accuracy:.3f}",
                  {True: "yes", False: "[bold red]NO[/bold red]", None: f"not verifiable: {terminal(v.note)}"}[v.holds])
    console.print(t)
    failed = [v for v in verdicts if v.holds is False]
    checked = [v for v in verdicts if v.holds is not None]
    if failed:
        console.print(f"[bold red]{len(failed)} of {len(checked)} published number(s) do not hold[/bold red]")
        return 1
    console.print(f"all {len(checked)} verifiable number(s) hold"
                  + (f"; {len(verdicts) - len(checked)} not verifiable" if len(checked) < len(verdicts) else ""))
    return 0


def cmd_certify(args: argparse.Namespace) -> int:
    from robrep.certify.run import certify_run

    with console.status(f"certifying {args.results} ({args.method})"):
        rows = certify_run(args.results, method=args.method, device=args.device, data_root=args.data_root,
                           complete=args.complete, solver=args.solver, complete_radii=args.complete_radii)
    t = Table(title=f"robrep certify {args.results} ({args.method}): robust accuracy lies between the two")
    for col in ("encoder", "task", "probe", "radius", "certified", "attacked"):
        t.add_column(col, overflow="fold", justify="right" if col in ("radius", "certified", "attacked") else "left")
    for _, r in rows.sort_values(["label", "task", "radius"]).iterrows():
        t.add_row(terminal(r.get("label") or r["run"]), terminal(r["task"]), terminal(r.get("probe", "standard")),
                  f"{r['radius']:g}", f"{r['certified_accuracy']:.3f}", f"{r['adversarial_accuracy']:.3f}")
    console.print(t)
    console.print("no certified point was broken by an attack of the run; certified_accuracy is in its rows")
    return 0


def _parse_set(text: str) -> tuple[str, object]:
    """``key=value`` with value parsed as int, float, bool, None or a comma list, else kept as text."""
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"--set expects key=value, got {text!r}")
    key, raw = text.split("=", 1)

    def parse(v: str):
        for cast in (int, float):
            try:
                return cast(v)
            except ValueError:
                pass
        return {"true": True, "false": False, "none": None}.get(v.lower(), v)

    return key.strip().replace("-", "_"), tuple(parse(v) for v in raw.split(",")) if "," in raw else parse(raw)


def add_config_options(parser: argparse.ArgumentParser, cls, names: tuple[str, ...] | None = None) -> None:
    """The options of dataclass ``cls``'s fields that declare one (``metadata["cli"]``, see
    ``robrep.harness.config``), or of those named; each left unset (None) unless given."""
    for f in dataclasses.fields(cls):
        spec = dict(f.metadata.get("cli") or {})
        if not spec or (names is not None and f.name not in names):
            continue
        flag = spec.pop("flag") or "--" + f.name.replace("_", "-")
        if spec.get("action") != "store_true" and "choices" not in spec:
            spec.setdefault("metavar", flag.lstrip("-").replace("-", "_").upper())  # named as typed: --learner LEARNER
        parser.add_argument(flag, dest=f.name, default=None, **spec)


# the bench options ``robrep sweep`` takes as the bench declares them (its test points, suites and folder have their own)
SWEEP_SHARES = ("budget", "steps", "restarts", "arch", "epochs", "seed", "threads", "device", "data_root")


def config_values(args: argparse.Namespace, cls, names: tuple[str, ...] | None = None) -> dict:
    """The fields of ``cls`` (or of those named) given on the command line, as config values."""
    values = {}
    for f in dataclasses.fields(cls):
        if names is not None and f.name not in names:
            continue
        value = getattr(args, f.name, None) if "cli" in f.metadata else None
        if value is None or value is False:
            continue
        values[f.name] = str(value) if isinstance(value, Path) else value
    return values


def _force_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--force", action="store_true", help="write into a folder that holds files robrep did not "
                        "write (they are left as they are; robrep never overwrites them)")


def _bench_command(sub) -> None:
    from robrep.harness.config import BenchConfig, floats

    b = sub.add_parser("bench", help="freeze encoders, probe every task, attack probe∘encoder, write a leaderboard table")
    b.add_argument("--config", type=Path, help="TOML file with a whole experiment (options below override it)")
    add_config_options(b, BenchConfig)
    b.add_argument("--eps", type=floats, default=None, metavar="EPS",
                   help="the attack radius as other toolkits name it: --eps 8/255 means --radii 0,8/255")
    b.add_argument("--dry-run", action="store_true", help="print the plan: what would be trained, what is done in "
                   "--out, what would run; run nothing")
    _force_option(b)
    b.set_defaults(func=cmd_bench)


def _sweep_command(sub) -> None:
    from robrep.harness.config import BenchConfig

    w = sub.add_parser("sweep", help="choose a learner's config on the validation split: train every grid point, "
                       "benchmark it on held-out training data, pick the most robust above a nominal floor")
    w.add_argument("--learner", default=DEFAULT_LEARNER, help=f"registered learner (default {DEFAULT_LEARNER})")
    w.add_argument("--dataset", default="mnist5k", help="data set; its validation view is used (default mnist5k)")
    w.add_argument("--grid", type=_parse_set, action="append", required=True, metavar="KEY=V1,V2",
                   help="config field and its values (repeatable; every combination is trained)")
    w.add_argument("--set", type=_parse_set, action="append", default=[], metavar="KEY=VALUE",
                   help="config override shared by every point (repeatable)")
    w.add_argument("--radius", type=float, default=0.1, help="attack radius the choice is made at (default 0.1)")
    w.add_argument("--min-nominal", type=float, help="nominal-accuracy floor (default: the grid's best - 0.05)")
    # the bench's options with a sweep's own defaults, then the ones it shares with the bench as they are
    w.add_argument("--suite", dest="suites", metavar="SUITE", action="append", help="attack suite (repeatable; "
                   "default native, torchattacks and foolbox, cascaded: the worst case over all of them)")
    w.add_argument("--n-examples", dest="n_examples", metavar="N_EXAMPLES", type=int,
                   help="validation points attacked (default: all)")
    add_config_options(w, BenchConfig, SWEEP_SHARES)
    w.add_argument("--out", type=Path, default=Path("robrep-sweep"), help="output folder (default robrep-sweep)")
    _force_option(w)
    w.set_defaults(func=cmd_sweep)


def _leaderboard_command(sub) -> None:
    lb = sub.add_parser("leaderboard", help="merge results CSVs into the published leaderboard and show it")
    lb.add_argument("results", nargs="*", type=Path, help="results.csv files or bench output folders (none: just show)")
    lb.add_argument("--out", type=Path, default=Path("leaderboard"), help="leaderboard folder (default leaderboard/)")
    lb.add_argument("--replace", action="store_true",
                    help="drop the board's rows of the runs being published (same run, data set, task, test points, "
                         "seed, label fraction) before merging: a republished run replaces its old rows")
    lb.add_argument("--render", action="store_true",
                    help="write every board's Markdown and PNG again from its CSV (the rows are not touched), and "
                         "the generated numbers of the README and docs/ beside the board folder")
    lb.add_argument("--html", action="store_true",
                    help="write the static web page: <out>/index.html and <out>/encoders/*.html (no server, no CDN)")
    lb.add_argument("--resort", action="store_true",
                    help="move every published row to where it belongs now: a standard board keeps only its "
                         "protocol's verified entries, the rest go to experiments/ or archive/")
    lb.add_argument("--submit", type=Path, metavar="RUN",
                    help="write a submission folder (--out) from a bench run: rows, config, probes, checkpoints and "
                         "entry.toml to fill in")
    lb.add_argument("--admit", type=Path, metavar="SUBMISSION",
                    help="re-check a submission (entry, robrep verify on its own checkpoints) and publish it")
    lb.add_argument("--detail", action="store_true",
                    help="show every attack's rows instead of the ranked headline tables")
    lb.set_defaults(func=cmd_leaderboard)


def _verify_command(sub) -> None:
    v = sub.add_parser("verify", help="re-attack a run's stored encoders and probes with an independent attack; "
                                      "exit 1 if a published number does not hold")
    v.add_argument("results", type=Path, help="a bench output folder (or its results.csv)")
    v.add_argument("--steps", type=int, default=None, help="PGD steps (default: the most the rows used, else 100)")
    v.add_argument("--restarts", type=int, default=None, help="restarts (default: the most the rows used, else 10)")
    v.add_argument("--tolerance", type=float, default=0.01,
                   help="how far a published accuracy may exceed the independent one (default 0.01)")
    v.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    v.add_argument("--margin", action="store_true",
                   help="also attack with APGD on the DLR margin loss (what a standard board's admission requires)")
    v.add_argument("--data-root", type=Path, default=None, help="folder of a folder-backed data set (mnist, celeba)")
    v.set_defaults(func=cmd_verify)


def _certify_command(sub) -> None:
    c = sub.add_parser("certify", help="add certified lower bounds (IBP, CROWN, alpha-CROWN, exact) beside a run's attacked upper "
                                       "bounds; stop if a certified point was broken by an attack")
    c.add_argument("results", type=Path, help="a bench output folder (or its results.csv)")
    from robrep.rows.layout import CERTIFY_METHODS

    c.add_argument("--method", choices=CERTIFY_METHODS, default="crown",
                   help="crown (a backward linear relaxation; default), alpha-crown (its slopes optimised: tighter, "
                        "tens of times slower) or ibp (interval bounds: fast, loose)")
    c.add_argument("--complete", type=float, default=None, metavar="SECONDS",
                   help="then decide the points the bounds left open, at most SECONDS per point (see --solver)")
    from robrep.harness.config import floats

    c.add_argument("--complete-radii", type=floats, default=None, metavar="R,R",
                   help="run the complete method only at these of the run's radii (default: every one)")
    c.add_argument("--solver", choices=("bab", "milp"), default="bab",
                   help="the complete method: bab (branch and bound on the ReLUs over alpha-beta-CROWN bounds; "
                        "default; L-inf and L2) or milp (a mixed-integer program per margin, HiGHS; L-inf only)")
    c.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    c.add_argument("--data-root", type=Path, default=None, help="folder of a folder-backed data set (mnist, celeba)")
    c.set_defaults(func=cmd_certify)


def _train_command(sub) -> None:
    from robrep.nets import ARCHS

    t = sub.add_parser("train", help="train a representation learner without labels and save it")
    t.add_argument("--learner", default=DEFAULT_LEARNER, help=f"registered learner (default {DEFAULT_LEARNER}; see `robrep list`)")
    t.add_argument("--dataset", default="mnist5k", help="registered data set (default mnist5k, embedded)")
    t.add_argument("--arch", choices=ARCHS, default=None, help="encoder/decoder architecture (default mlp)")
    t.add_argument("--epochs", type=int, default=None, help="training epochs (default: the learner's config)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    t.add_argument("--threads", type=int, default=None, help="CPU threads (default: OMP_NUM_THREADS, else this "
                   "process's share of the cores)")
    t.add_argument("--out", type=Path, default=None, help="checkpoint folder (default: under ~/.cache/robrep/runs)")
    t.add_argument("--data-root", type=Path, default=None, help="folder of a folder-backed data set (mnist, celeba)")
    t.add_argument("--download", action="store_true", help="download the data set if it is missing (where possible)")
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", type=_parse_set,
                   help="override a config field, e.g. --set gamma=100 --set latent_dim=16")
    _force_option(t)
    t.set_defaults(func=cmd_train)


def _toy_command(sub) -> None:
    y = sub.add_parser("toy", help="the discrete toy model of the paper (figure 3): VAE vs Smooth Encoder")
    y.add_argument("--out", type=Path, default=Path("robrep-toy"), help="output folder for toy.png and toy.csv")
    _force_option(y)
    y.set_defaults(func=cmd_toy)


def build_parser() -> argparse.ArgumentParser:
    from robrep._version import __version__

    p = argparse.ArgumentParser(prog="robrep", description="Robustness benchmarking for learned representations.")
    p.add_argument("--version", action="version", version=f"robrep {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="log library messages at INFO level")
    sub = p.add_subparsers(dest="command", required=True)

    _bench_command(sub)
    _sweep_command(sub)
    _leaderboard_command(sub)
    _verify_command(sub)
    _certify_command(sub)
    _train_command(sub)
    _toy_command(sub)
    ls = sub.add_parser("list", help="list registered learners and data sets")
    ls.set_defaults(func=cmd_list)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if console.is_terminal:
        handler: logging.Handler = RichHandler(console=console, show_path=False)
    else:  # a file or a pipe: plain lines, tables as wide as they need (never wrapped at 80 columns)
        console.width = 10_000
        handler = logging.StreamHandler(console.file)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s",
                        handlers=[handler])
    from robrep.checkpoint import CheckpointError
    from robrep.data import DatasetError
    from robrep.distributed import World
    from robrep.board.leaderboard import LeaderboardError
    from robrep.registry import UnknownNameError
    from robrep.verify import VerifyError
    from robrep.certify.run import CertifyError

    rank = os.environ.get("RANK") if os.environ.get("WORLD_SIZE", "1") not in ("", "1") else None
    try:
        return args.func(args)
    except KeyboardInterrupt:
        resumable = args.command in ("bench", "sweep")
        console.print("interrupted" + ("; rerun the same command to resume (finished cells are kept)"
                                       if resumable else "; nothing half-written was kept"), markup=False)
        return 130
    except (DatasetError, CheckpointError, UnknownNameError, LeaderboardError, VerifyError, CertifyError, ValueError,
            RuntimeError) as e:
        console.print(f"[bold red]error{f' (rank {rank})' if rank else ''}:[/bold red] {terminal(e)}")
        return 2
    except OSError as e:  # the file system said no (a full disk, a permission): where and why, no traceback
        where = f" {e.filename}" if e.filename else ""
        console.print(f"[bold red]error{f' (rank {rank})' if rank else ''}:[/bold red]{terminal(where)}: "
                      f"{terminal(e.strerror or e)}")
        return 2
    finally:
        World.shutdown()


if __name__ == "__main__":
    sys.exit(main())
