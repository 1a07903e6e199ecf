"""The ``poison-jax`` command: ``demo``, ``run``, ``presets``, ``plot``, ``synthetic`` and ``example``.

The parser is in ``face/_parser.py``, the commands in ``face/_commands.py`` and ``face/_example.py``;
here are the entry point (``poison-jax`` runs :func:`main`) and the joining of a multi-host run.
"""

from __future__ import annotations

import sys

import poison_jax
from poison_jax.face._parser import build_parser

__all__ = ["build_parser", "main"]


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


def main(argv: list[str] | None = None) -> int:
    """Run ``poison-jax`` with ``argv`` (default: the command line); the exit status: 0 done, 1 nothing
    to do (``plot`` of a folder with no finished cell), 2 an error, said in one line on stderr."""
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
