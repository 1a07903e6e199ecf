"""The subcommands of ``poison-jax`` that run, list and draw sweeps (private: the command is
:mod:`poison_jax.face.cli`). Each takes the parsed arguments and returns the exit status; its
docstring is its ``--help`` description."""

from __future__ import annotations

import json
import math
from pathlib import Path


def _folder_config(results: Path) -> dict:
    """The config beside a ``results.jsonl`` by dotted path (``{}`` without one), also for a folder
    written by 0.1.0."""
    from poison_jax.experiments import legacy

    config_path = results.parent / "config.json"
    return legacy.flatten(json.loads(config_path.read_text())["config"]) if config_path.exists() else {}


def _method(records, config: dict) -> str:
    return config.get("method") or next((r["hypergrad"] for r in records if r.get("hypergrad")), "?")


def _report_one(records, results: Path, config: dict, out_dir: Path, title: str, diagnostics: dict) -> list[Path]:
    from poison_jax.face import plots

    figures = plots.write_figures(records, out_dir / "figures", title, diagnostics=diagnostics)
    print("\n" + plots.summary_table(records) + "\n")
    print("\n".join(plots.diagnostics_check(records, diagnostics, config)) + "\n")
    print(f"results: {results}")
    return figures


def _report_several(sources, out_dir: Path, title: str, diagnostics: list[dict]) -> list[Path]:
    from poison_jax.face import plots

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
    return figures


def _report(sources, out_dir: Path, title: str) -> None:
    """Figures of one or several results folders (``[(records, results.jsonl path, config), ...]``)
    under ``out_dir/figures``; per folder its summary table and IFT assumption check."""
    import jax

    from poison_jax.experiments import store

    if jax.process_index() != 0:  # in a multi-host run process 0 reports
        return
    diagnostics = [store.read_diagnostics(results.parent) for _, results, _ in sources]
    if len(sources) == 1:
        ((records, results, config),) = sources
        figures = _report_one(records, results, config, out_dir, title, diagnostics[0])
    else:
        figures = _report_several(sources, out_dir, title, diagnostics)
    print("figures: " + ", ".join(str(p) for p in figures if p.suffix == ".png") + " (and PDF)")


def _run_config(config, args) -> int:
    from poison_jax.experiments import legacy, presets, sweep

    out_dir = Path(args.out) if args.out is not None else Path("results") / config.run_name
    if args.dry_run:
        print(presets.describe_config(config, f"{config.name} (--dry-run: nothing runs)"))
        print(f"\nresults would go to: {out_dir}")
        return 0
    cache = False if args.no_cache else (args.cache_dir or True)
    records = sweep.run_sweep(
        config, out_dir, resume=args.resume, progress=not args.no_progress, compilation_cache=cache
    )
    title = f"{config.run_name} ({config.model.kind}, {config.method.kind.upper()})"
    _report([(records, out_dir / "results.jsonl", legacy.flatten(config.to_dict()))], out_dir, title)
    return 0


def demo(args) -> int:
    """Run the paper's MNIST setting (mnist5k-lr: real MNIST 0 v 8, 512/171/317) with 5 seeds, offline."""
    from poison_jax.experiments import presets

    config = presets.preset("mnist5k-lr", {"sweep.num_seeds": args.seeds, "method": args.hypergrad})
    print(
        f"demo: {config.name}, {config.sweep.num_seeds} seeds, settings {', '.join(config.sweep.settings)}, "
        f"fractions {', '.join(f'{100 * f:.1f}%' for f in config.fractions)}"
    )
    return _run_config(config, args)


def run(args) -> int:
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


def list_presets(args) -> int:
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


def plot(args) -> int:
    """Figures, summary table and IFT assumption check of a finished (or partial) results file.

    With several results folders, e.g.

      poison-jax plot results/demo-rmd results/demo-ift --out results/rmd-vs-ift

    the figures draw every folder's curves side by side, labelled by method and folder (never
    merged), and the summary is one table per folder; --out is then required.
    """
    from poison_jax.experiments import store

    if len(args.results) > 1 and args.out is None:
        raise ValueError(
            f"{len(args.results)} results folders need --out FOLDER for the comparison figures "
            f"(e.g. --out results/compare): they are written nowhere by default"
        )
    sources = []
    for given in map(Path, args.results):
        records = store.read_records(given)
        if not records:
            print(f"{given} holds no finished cell yet: nothing to plot")
            return 1
        results = given / "results.jsonl" if given.is_dir() else given
        sources.append((records, results, _folder_config(results)))
    out_dir = Path(args.out) if args.out else sources[0][1].parent
    if len(sources) == 1:
        title = sources[0][2].get("name", "")
    else:
        names = list(dict.fromkeys(config.get("name", "?") for _, _, config in sources))
        methods = " vs ".join(_method(records, config).upper() for records, _, config in sources)
        title = f"{', '.join(names)}: {methods}"
    _report(sources, out_dir, title)
    return 0


def synthetic(args) -> int:
    """The paper's Fig. 1: validation error over the position of one poison point, with and
    without regularisation, and the λ chosen by grid search at each position."""
    from poison_jax.experiments.synthetic import synthetic_maps
    from poison_jax.face import plots

    maps = synthetic_maps(grid_size=args.grid, seed=args.seed)
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
