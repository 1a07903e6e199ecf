"""The argument parser of ``poison-jax`` (private: the command is :mod:`poison_jax.face.cli`): one
subparser per subcommand, each described by its command's docstring."""

from __future__ import annotations

import argparse
import inspect

import poison_jax
from poison_jax.face._commands import demo, list_presets, plot, run, synthetic
from poison_jax.face._example import example

DEMO_SEEDS = 5


def _add_run_options(p: argparse.ArgumentParser, default_out: str | None) -> None:
    """The options of a command that runs a sweep: where to, resume, progress, devices and hosts."""
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
        "--dry-run",
        action="store_true",
        help="print every field of the config this command line would run and where its results would go, "
        "then stop: checks the --set fields before a long run",
    )
    cache = p.add_mutually_exclusive_group()
    cache.add_argument(
        "--cache-dir",
        default=None,
        help="folder of JAX's persistent compilation cache: a second run loads its programs instead of "
        "compiling them (default: $POISON_JAX_CACHE_DIR or ~/.cache/poison_jax/jax)",
    )
    cache.add_argument("--no-cache", action="store_true", help="no persistent compilation cache")
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


def _add_demo(sub) -> None:
    p = sub.add_parser(
        "demo",
        help="the paper's MNIST experiment on the offline MNIST sample (5 seeds, minutes)",
        description=demo.__doc__,
    )
    _add_run_options(p, "results/demo")
    p.add_argument("--seeds", type=int, default=DEMO_SEEDS, help="number of random splits (default: %(default)s)")
    p.add_argument("--hypergrad", choices=("rmd", "ift"), default="rmd", help="hypergradient method (default: rmd)")
    p.set_defaults(func=demo)


def _add_run(sub) -> None:
    from poison_jax.experiments.presets import PRESETS
    from poison_jax.experiments.sections import METHODS

    p = sub.add_parser(
        "run",
        help="run a preset's sweep (Λ settings x poisoning fractions x seeds), on its data or yours (--data)",
        description=inspect.cleandoc(run.__doc__ or ""),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--preset",
        default=None,
        choices=sorted(PRESETS),
        metavar="NAME",
        help=f"the settings to run, one of {', '.join(sorted(PRESETS))} (with --data: default digits-lr)",
    )
    p.add_argument(
        "--data",
        metavar="FILE.npz",
        default=None,
        help="your own data: an .npz with X_train, y_train, X_test, y_test, used as given (see the "
        "description above); the preset's data fields go back to their defaults",
    )
    p.add_argument(
        "--set",
        action="append",
        metavar="PATH=VALUE",
        help="override a config field by its path, e.g. --set sweep.num_seeds=3 --set "
        "attack.log_lam_box='(-8, log(200))'; switch a choice by its kind, e.g. --set method=implicit "
        "(repeatable; poison-jax presets NAME lists the paths)",
    )
    p.add_argument(
        "--hypergrad",
        choices=tuple(METHODS),
        default=None,
        help="hypergradient method (default: the preset's; rmd for the paper's presets, implicit for "
        "mnist5k-lr-strong)",
    )
    _add_run_options(p, None)
    p.set_defaults(func=run)


def _add_presets(sub) -> None:
    from poison_jax.experiments.presets import PRESETS

    p = sub.add_parser(
        "presets",
        help="list the presets, or show every field of one (value and meaning)",
        description=list_presets.__doc__,
    )
    p.add_argument(
        "name", nargs="?", choices=sorted(PRESETS), metavar="NAME", help=f"one of {', '.join(sorted(PRESETS))}"
    )
    p.set_defaults(func=list_presets, devices=None)


def _add_plot(sub) -> None:
    p = sub.add_parser(
        "plot",
        help="figures and summary table of a results file, or of several side by side",
        description=inspect.cleandoc(plot.__doc__ or ""),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "results",
        nargs="+",
        metavar="RESULTS",
        help="a results.jsonl, or the folder holding it; several (e.g. an RMD and an IFT run) are drawn "
        "side by side in the same figures, their curves labelled by method and folder",
    )
    p.add_argument(
        "--out", default=None, help="folder for figures/ (default with one RESULTS: its folder; required with several)"
    )
    p.set_defaults(func=plot, devices=None)


def _add_synthetic(sub) -> None:
    p = sub.add_parser("synthetic", help="the paper's Fig. 1 maps on two 2-D Gaussians", description=synthetic.__doc__)
    p.add_argument("--out", default="results/synthetic", help="folder for the figure (default: %(default)s)")
    p.add_argument("--grid", type=int, default=60, help="grid points per axis (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic data (default: %(default)s)")
    p.set_defaults(func=synthetic, devices=None)


def _add_example(sub) -> None:
    p = sub.add_parser(
        "example", help="compute one hypergradient by RMD and by IFT on a small problem", description=example.__doc__
    )
    p.add_argument("--steps", type=int, default=500, help="inner gradient-descent steps (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="random seed of the data (default: %(default)s)")
    p.set_defaults(func=example, devices=None)


def build_parser() -> argparse.ArgumentParser:
    """The ``poison-jax`` parser: ``--version`` and the subcommands demo, run, presets, plot,
    synthetic and example (each parsed ``args.func`` runs its command)."""
    parser = argparse.ArgumentParser(
        prog="poison-jax",
        description="Optimal data poisoning against learners with learned regularisation (JAX).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {poison_jax.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in (_add_demo, _add_run, _add_presets, _add_plot, _add_synthetic, _add_example):
        add(sub)
    return parser
