"""The ``poison-jax`` command: ``demo``, ``run``, ``presets``, ``plot``, ``synthetic`` and ``example``."""

from __future__ import annotations

import argparse
import inspect
import json
import math
import sys
from pathlib import Path

import poison_jax

DEMO_SEEDS = 5


def _join_hosts(args) -> None:
    """Join a multi-host run (``jax.distributed.initialize``) when ``--coordinator`` is given."""
    if getattr(args, "coordinator", None) is None:
        return
    import jax

    if args.num_processes is None or args.process_id is None:
        raise ValueError("--coordinator needs --num-processes N and --process-id I (0 <= I < N)")
    if not 0 <= args.process_id < args.num_processes:
        raise ValueError(f"--process-id must be in [0, {args.num_processes}), got {args.process_id}")
    jax.config.update("jax_cpu_collectives_implementation", "gloo")  # CPU hosts talk over gloo
    jax.distributed.initialize(
        coordinator_address=args.coordinator, num_processes=args.num_processes, process_id=args.process_id
    )


def _leave_hosts(args) -> None:
    """Wait until every process is done (process 0 writes figures last), then leave together."""
    if getattr(args, "coordinator", None) is None:
        return
    import jax
    from jax.experimental import multihost_utils

    multihost_utils.sync_global_devices("poison-jax done")
    jax.distributed.shutdown()


def _load_records(path: Path) -> tuple[list[dict], dict]:
    path = Path(path)
    results = path / "results.jsonl" if path.is_dir() else path
    if not results.exists():
        raise FileNotFoundError(f"no results file at {str(results)!r}: give a results.jsonl or the folder holding it")
    records = []
    for number, line in enumerate(results.read_text().splitlines(), start=1):
        if line.strip():
            try:
                records.append(json.loads(line))
            except ValueError as err:
                raise ValueError(f"{results}, line {number}, is not valid JSON: {err}") from None
    from poison_jax.experiments import legacy

    config_path = results.parent / "config.json"
    config = json.loads(config_path.read_text())["config"] if config_path.exists() else {}
    return records, legacy.flatten(config)  # by dotted path, also for a folder written by 0.1.0


def _finish(records, results: Path, out_dir: Path, title: str, config: dict | None = None) -> None:
    """Figures, summary table and IFT assumption check of one results folder."""
    _report([(records, results, config or {})], out_dir, title)


def _method(records, config: dict) -> str:
    return config.get("method") or next((r["hypergrad"] for r in records if r.get("hypergrad")), "?")


def _report(sources, out_dir: Path, title: str) -> None:
    """Figures of one or several results folders (``[(records, results.jsonl path, config), ...]``)
    under ``out_dir/figures``; per folder its summary table and IFT assumption check."""
    import jax

    from poison_jax.experiments import store
    from poison_jax.face import plots

    if jax.process_index() != 0:  # in a multi-host run process 0 reports
        return
    diagnostics = [store.read_diagnostics(results.parent) for _, results, _ in sources]
    if len(sources) == 1:
        ((records, results, config),) = sources
        figures = plots.write_figures(records, out_dir / "figures", title, diagnostics=diagnostics[0])
        print("\n" + plots.summary_table(records) + "\n")
        print("\n".join(plots.diagnostics_check(records, diagnostics[0], config)) + "\n")
        print(f"results: {results}")
    else:
        tagged, tagged_diagnostics = [], {}
        for index, ((records, results, config), diag) in enumerate(zip(sources, diagnostics, strict=True)):
            folder = results.parent if results.name == "results.jsonl" else results
            tagged += plots.label_source(records, index, f"{_method(records, config)} ({folder})")
            tagged_diagnostics.update({(index, *key): value for key, value in diag.items()})
        figures = plots.write_figures(tagged, out_dir / "figures", title, diagnostics=tagged_diagnostics)
        for (records, results, config), diag in zip(sources, diagnostics, strict=True):
            print(f"\n## {results.parent}: {_method(records, config).upper()} ({config.get('name', '?')})\n")
            print(plots.summary_table(records) + "\n")
            print("\n".join(plots.diagnostics_check(records, diag, config)))
        print("\nresults: " + ", ".join(str(results) for _, results, _ in sources))
    print("figures: " + ", ".join(str(p) for p in figures if p.suffix == ".png") + " (and PDF)")


def _run_config(config, args) -> int:
    from poison_jax.experiments import legacy, sweep

    out_dir = Path(args.out) if args.out is not None else Path("results") / config.run_name
    records = sweep.run_sweep(config, out_dir, resume=args.resume, progress=not args.no_progress)
    _finish(
        records,
        out_dir / "results.jsonl",
        out_dir,
        f"{config.run_name} ({config.model.kind}, {config.method.kind.upper()})",
        legacy.flatten(config.to_dict()),
    )
    return 0


def _demo(args) -> int:
    """Run the paper's MNIST setting (mnist5k-lr: real MNIST 0 v 8, 512/171/317) with 5 seeds, offline."""
    from poison_jax.experiments import presets

    config = presets.preset("mnist5k-lr", {"sweep.num_seeds": args.seeds, "method": args.hypergrad})
    print(
        f"demo: {config.name}, {config.sweep.num_seeds} seeds, settings {', '.join(config.sweep.settings)}, "
        f"fractions {', '.join(f'{100 * f:.1f}%' for f in config.fractions)}"
    )
    return _run_config(config, args)


def _run(args) -> int:
    """Run (or resume) the sweep of a preset, with fields overridden by --set.

    Your own data: --data FILE.npz (keys X_train, y_train, X_test, y_test; labels 0..K-1 or
    regression targets in [0, 1]) runs the settings of --preset (default digits-lr) on it, as given:
    no scaling (--set data.scale=standardise or minmax to scale), the poison box the data's range
    (--set data.x_box='(0, 1)' to choose one). The results go to results/FILE-STEM.
    """
    from poison_jax.experiments import presets
    from poison_jax.experiments.overrides import parse_overrides

    overrides = parse_overrides(args.set or [])
    if args.hypergrad is not None:
        overrides["method"] = args.hypergrad
    if args.data is not None:
        if overrides.get("data", "npz") != "npz":
            raise ValueError(f"--data reads an .npz file, but --set data={overrides['data']} asks for another source")
        overrides = {**overrides, "data": "npz", "data.path": args.data}
    elif args.preset is None:
        raise ValueError("run needs --preset NAME (poison-jax presets lists them) or --data FILE.npz")
    return _run_config(presets.preset(args.preset or "digits-lr", overrides), args)


def _presets(args) -> int:
    """The presets, one line each; with a NAME, every field of that preset with its value and meaning."""
    from poison_jax.experiments import presets

    if args.name is not None:
        print(presets.describe_preset(args.name))
        return 0
    width = max(map(len, presets.PRESETS))
    for name in presets.PRESETS:
        print(f"{name:<{width}}  {presets.PRESETS[name].summary}")
    print("\npoison-jax presets NAME: every field of NAME; poison-jax run --preset NAME: run its sweep")
    return 0


def _plot(args) -> int:
    """Figures, summary table and IFT assumption check of a finished (or partial) results file.

    With several results folders, e.g.

      poison-jax plot results/demo-rmd results/demo-ift --out results/rmd-vs-ift

    the figures draw every folder's curves side by side, labelled by method and folder (never
    merged), and the summary is one table per folder; --out is then required.
    """
    if len(args.results) > 1 and args.out is None:
        raise ValueError(
            f"{len(args.results)} results folders need --out FOLDER for the comparison figures "
            f"(e.g. --out results/compare): they are written nowhere by default"
        )
    sources = []
    for given in map(Path, args.results):
        records, config = _load_records(given)
        if not records:
            print(f"{given} holds no finished cell yet: nothing to plot")
            return 1
        results = given / "results.jsonl" if given.is_dir() else given
        sources.append((records, results, config))
    out_dir = Path(args.out) if args.out else sources[0][1].parent
    if len(sources) == 1:
        title = sources[0][2].get("name", "")
    else:
        names = list(dict.fromkeys(config.get("name", "?") for _, _, config in sources))
        methods = " vs ".join(_method(records, config).upper() for records, _, config in sources)
        title = f"{', '.join(names)}: {methods}"
    _report(sources, out_dir, title)
    return 0


def _synthetic(args) -> int:
    """The paper's Fig. 1: validation error over the position of one poison point, with and
    without regularisation, and the λ chosen by grid search at each position."""
    from poison_jax.experiments import synthetic
    from poison_jax.face import plots

    maps = synthetic.synthetic_maps(grid_size=args.grid, seed=args.seed)
    out_dir = Path(args.out)
    paths = plots.save(plots.synthetic_figure(maps), out_dir / "synthetic_maps")
    (out_dir / "synthetic_maps.json").write_text(json.dumps(maps, indent=1) + "\n")
    print(
        f"max validation error: {max(map(max, maps['val_error_noreg'])):.3f} without regularisation, "
        f"{max(map(max, maps['val_error_reg'])):.3f} with log λ = {maps['log_lam_reg']:.2f} "
        f"(λ = {math.exp(maps['log_lam_reg']):g})"
    )
    print("figure: " + ", ".join(map(str, paths)))
    return 0


def _example(args) -> int:
    """A worked hypergradient: L2-regularised logistic regression with 6 poison points and log-λ."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from poison_jax import engine

    rng = np.random.default_rng(args.seed)
    d, n, n_p, n_val = 10, 60, 6, 40
    w_true = rng.normal(size=d)
    x_np, x_val_np = rng.normal(size=(n, d)), rng.normal(size=(n_val, d))
    y, y_val = (x_np @ w_true > 0).astype(np.float32), (x_val_np @ w_true > 0).astype(np.float32)
    x, x_val = jnp.asarray(x_np, jnp.float32), jnp.asarray(x_val_np, jnp.float32)
    y_p = 1.0 - y[:n_p]  # poison points: clones with flipped labels

    def bce(logits, labels):
        return jnp.mean(jax.nn.softplus(logits) - labels * logits)

    def inner_loss(w, theta):
        features = jnp.concatenate([theta["xp"], x[n_p:]])
        return bce(features @ w, jnp.concatenate([y_p, y[n_p:]])) + 0.5 * jnp.exp(theta["log_lam"]) * w @ w

    def outer_loss(w, theta):
        return bce(x_val @ w, y_val)

    theta = {"xp": x[:n_p], "log_lam": jnp.asarray(np.log(0.1), jnp.float32)}
    w0 = jnp.zeros(d, jnp.float32)
    print("Validation loss of logistic regression and its gradient w.r.t. 6 poison points and log-λ\n")
    for method in (engine.RMD(steps=args.steps, lr=1.0), engine.IFT(steps=args.steps, lr=1.0, cg_iters=50)):
        result = engine.hypergrad(method, inner_loss, outer_loss, w0, theta)
        print(f"{method}")
        print(f"  validation loss        {float(result.value):.6f}")
        print(f"  d loss / d log-λ       {float(result.grad['log_lam']):+.6f}")
        print(f"  ||d loss / d Xp||      {float(jnp.linalg.norm(result.grad['xp'])):.6f}")
        stats = ", ".join(f"{k} {float(v):.3g}" for k, v in sorted(result.stats.items()))
        print(f"  status                 {engine.message(result.status)} ({stats})\n")
    return 0


def _add_run_options(p: argparse.ArgumentParser, default_out: str | None) -> None:
    p.add_argument(
        "--out",
        default=default_out,
        help="folder for results.jsonl, states and figures (default: "
        + ("%(default)s)" if default_out else "results/PRESET, named after the preset)"),
    )
    p.add_argument(
        "--resume", action="store_true", help="continue a partly finished sweep in --out, skipping finished cells"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument(
        "--devices",
        type=int,
        default=None,
        help="on a CPU, split the host into this many XLA devices to run seeds in parallel "
        "(default: one per usable core; no effect on a GPU)",
    )
    hosts = p.add_argument_group("multi-host (jax.distributed): run the same command on every host")
    hosts.add_argument(
        "--coordinator",
        metavar="HOST:PORT",
        default=None,
        help="address of process 0, which coordinates and alone writes results",
    )
    hosts.add_argument("--num-processes", type=int, default=None, help="number of processes (hosts) in the run")
    hosts.add_argument("--process-id", type=int, default=None, help="this process's index, 0 .. num-processes - 1")


def build_parser() -> argparse.ArgumentParser:
    from poison_jax.experiments.presets import PRESETS
    from poison_jax.experiments.sections import METHODS

    parser = argparse.ArgumentParser(
        prog="poison-jax",
        description="Optimal data poisoning against learners with learned regularisation (JAX).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {poison_jax.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    demo = sub.add_parser(
        "demo",
        help="the paper's MNIST experiment on the offline MNIST sample (5 seeds, minutes)",
        description=_demo.__doc__,
    )
    _add_run_options(demo, "results/demo")
    demo.add_argument("--seeds", type=int, default=DEMO_SEEDS, help="number of random splits (default: %(default)s)")
    demo.add_argument("--hypergrad", choices=("rmd", "ift"), default="rmd", help="hypergradient method (default: rmd)")
    demo.set_defaults(func=_demo)

    run = sub.add_parser(
        "run",
        help="run a preset's sweep (Λ settings x poisoning fractions x seeds), on its data or yours (--data)",
        description=inspect.cleandoc(_run.__doc__ or ""),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument(
        "--preset",
        default=None,
        choices=sorted(PRESETS),
        metavar="NAME",
        help=f"the settings to run, one of {', '.join(sorted(PRESETS))} (with --data: default digits-lr)",
    )
    run.add_argument(
        "--data",
        metavar="FILE.npz",
        default=None,
        help="your own data: an .npz with X_train, y_train, X_test, y_test, used as given (see the "
        "description above); the preset's data fields go back to their defaults",
    )
    run.add_argument(
        "--set",
        action="append",
        metavar="PATH=VALUE",
        help="override a config field by its path, e.g. --set sweep.num_seeds=3 --set "
        "attack.log_lam_box='(-8, log(200))'; switch a choice by its kind, e.g. --set method=implicit "
        "(repeatable; poison-jax presets NAME lists the paths)",
    )
    run.add_argument(
        "--hypergrad",
        choices=tuple(METHODS),
        default=None,
        help="hypergradient method (default: the preset's; rmd for the paper's presets, implicit for "
        "mnist5k-lr-strong)",
    )
    _add_run_options(run, None)
    run.set_defaults(func=_run)

    presets = sub.add_parser(
        "presets", help="list the presets, or show every field of one (value and meaning)", description=_presets.__doc__
    )
    presets.add_argument(
        "name", nargs="?", choices=sorted(PRESETS), metavar="NAME", help=f"one of {', '.join(sorted(PRESETS))}"
    )
    presets.set_defaults(func=_presets, devices=None)

    plot = sub.add_parser(
        "plot",
        help="figures and summary table of a results file, or of several side by side",
        description=inspect.cleandoc(_plot.__doc__ or ""),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    plot.add_argument(
        "results",
        nargs="+",
        metavar="RESULTS",
        help="a results.jsonl, or the folder holding it; several (e.g. an RMD and an IFT run) are drawn "
        "side by side in the same figures, their curves labelled by method and folder",
    )
    plot.add_argument(
        "--out", default=None, help="folder for figures/ (default with one RESULTS: its folder; required with several)"
    )
    plot.set_defaults(func=_plot, devices=None)

    synthetic = sub.add_parser(
        "synthetic", help="the paper's Fig. 1 maps on two 2-D Gaussians", description=_synthetic.__doc__
    )
    synthetic.add_argument("--out", default="results/synthetic", help="folder for the figure (default: %(default)s)")
    synthetic.add_argument("--grid", type=int, default=60, help="grid points per axis (default: %(default)s)")
    synthetic.add_argument("--seed", type=int, default=0, help="seed of the synthetic data (default: %(default)s)")
    synthetic.set_defaults(func=_synthetic, devices=None)

    example = sub.add_parser(
        "example", help="compute one hypergradient by RMD and by IFT on a small problem", description=_example.__doc__
    )
    example.add_argument("--steps", type=int, default=500, help="inner gradient-descent steps (default: %(default)s)")
    example.add_argument("--seed", type=int, default=0, help="random seed of the data (default: %(default)s)")
    example.set_defaults(func=_example, devices=None)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        print(f"\npoison-jax {poison_jax.__version__}")
        return 0
    if getattr(args, "devices", None) is not None and args.devices < 1:
        parser.error(f"--devices must be a positive integer, got {args.devices}")
    if args.command in ("demo", "run"):
        from poison_jax.experiments.devices import use_cpu_cores

        use_cpu_cores(args.devices)
    if args.command in ("demo", "run", "plot", "synthetic"):
        import matplotlib

        matplotlib.use("Agg")  # this process writes files only; the library leaves the backend alone
    try:
        _join_hosts(args)
        status = args.func(args)
        _leave_hosts(args)
        return status
    except (ValueError, FileNotFoundError, FileExistsError, PermissionError, RuntimeError, ImportError) as err:
        print(f"poison-jax {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
