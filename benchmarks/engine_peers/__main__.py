"""``python -m benchmarks.engine_peers``: see :mod:`benchmarks.engine_peers`."""

from __future__ import annotations

import time
from importlib import metadata
from pathlib import Path

import jax

import benchmarks.engine_peers
from benchmarks import harness
from benchmarks.engine_peers.compare import GOAL, TARGET_COSINE, candidates, compile_all, summary, timed_rows
from benchmarks.engine_peers.problem import FULL, QUICK, Reference, build_problem, compute_reference, float32_problem
from benchmarks.engine_peers.report import markdown, plot


def _versions() -> dict:
    out = {}
    for pkg in ("optimistix", "jaxopt", "lineax", "equinox", "optax"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = None
    return out


def run(args) -> dict:
    if jax.config.jax_enable_x64:  # optimistix's LBFGS does not trace with x64 on and float32 inputs
        raise RuntimeError("run the float32 timings without jax_enable_x64 (unset JAX_ENABLE_X64)")
    spec = QUICK if args.quick else FULL
    arrays = build_problem(spec)
    reference = Reference(arrays, spec["d"])  # float64, in its own process, while the candidates compile
    problem = float32_problem(arrays, spec)
    everything, skipped = candidates(spec, problem)
    start = time.perf_counter()
    ok, failed = compile_all(everything, problem)
    compile_s = time.perf_counter() - start
    exact, ref_info = reference.result()
    rows, timing, cg_step_ms = timed_rows(spec, problem, ok, (exact, ref_info), args.wait_idle or 0.0)
    return {
        **summary(spec, args.quick, rows, cg_step_ms),
        "theta_shapes": {k: list(v.shape) for k, v in problem.theta.items()},
        "reference": ref_info,
        "failed": failed,
        "timing": {**timing, "compile_and_first_calls_s": compile_s},
        "versions": _versions(),
        "skipped": skipped,
    }


def main(argv=None) -> dict | None:
    parser = harness.parser("engine_peers", benchmarks.engine_peers.__doc__)
    parser.add_argument(
        "--reference-only",
        metavar="DIR",
        default=None,
        help="internal: compute the float64 reference of DIR/problem.npz into DIR/reference.npz",
    )
    parser.add_argument(
        "--wait-idle",
        type=float,
        default=None,
        metavar="SECONDS",
        help="after compiling, wait up to SECONDS for a 1-minute load average below 1.5 before "
        "timing (default: 0; the load is recorded either way)",
    )
    args = parser.parse_args(argv)
    if args.reference_only:
        compute_reference(Path(args.reference_only))
        return None
    harness.select_device(args.device)
    result = harness.finish(args, "engine_peers", run(args), markdown, plot=plot)
    print(
        f"\nheadline: poison_jax / fastest peer to cosine {TARGET_COSINE} (cold) = "
        f"{harness.fmt(result['headline_ratio'], '.3f')} (goal <= {GOAL.target})"
    )
    return result


if __name__ == "__main__":
    main()
