"""``python -m benchmarks.accuracy``: see :mod:`benchmarks.accuracy`."""

from __future__ import annotations

import benchmarks.accuracy
from benchmarks import harness
from benchmarks.accuracy.problem import LR, MLP, QUICK_LR, QUICK_MLP, paper_activation_diagnostic
from benchmarks.accuracy.report import markdown, plot
from benchmarks.accuracy.study import TARGET_COSINE, study


def run(args) -> dict:
    lr_spec, mlp_spec = (QUICK_LR, QUICK_MLP) if args.quick else (LR, MLP)
    result = {"target_cosine": TARGET_COSINE, "lr": study(lr_spec, with_goal=True), "mlp": study(mlp_spec, False)}
    result["mlp"]["paper_activation_diagnostic"] = (
        paper_activation_diagnostic(mlp_spec) if mlp_spec.get("diagnostic", True) else {"skipped": "--quick"}
    )
    result["goals"] = {"ift_over_rmd_to_0.999": result["lr"]["goal"]["ift_over_rmd"]}
    return result


def main(argv=None) -> dict:
    return harness.main("accuracy", benchmarks.accuracy.__doc__, run, markdown, argv, plot=plot)


if __name__ == "__main__":
    main()
