"""The accuracy study's table and figure."""

from __future__ import annotations

from pathlib import Path

from benchmarks.accuracy.study import TARGET_COSINE
from benchmarks.harness import fmt

SERIES = (
    ("rmd_over_T", "RMD", "T", "RMD over T", "o-"),
    ("ift_over_T_train", "IFT incl. training", "T_train", "IFT over T_train (incl. training)", "s-"),
    ("ift_over_cg_iters", "IFT given w*", "cg_iters", "IFT over CG iterations (given w*)", "^-"),
)


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    parts = [k for k in ("lr", "mlp") if k in result]
    fig, axes = plt.subplots(2, len(parts), figsize=(6 * len(parts), 8), squeeze=False)
    for col, part in enumerate(parts):
        res = result[part]
        for key, _, _, label, style in SERIES:
            rows = [r for r in res[key] if r["cosine"] is not None]
            ms = [r["median_ms"] for r in rows]
            axes[0, col].loglog(ms, [max(1 - r["cosine"], 1e-12) for r in rows], style, label=label)
            axes[1, col].loglog(ms, [r["rel_error"] for r in rows], style, label=label)
        axes[0, col].axhline(1 - TARGET_COSINE, color="grey", ls=":", label=f"cosine = {TARGET_COSINE}")
        axes[0, col].set_title(f"{res['problem']['name']}: {res['model']}", fontsize=9)
        axes[0, col].set_ylabel("1 - cosine to exact (float64)")
        axes[1, col].set_ylabel("relative error to exact")
        for row in range(2):
            axes[row, col].set_xlabel("median wall time (ms)")
            axes[row, col].grid(True, which="both", alpha=0.3)
        axes[0, col].legend(fontsize=8)
    fig.suptitle(f"Hypergradient accuracy against cost ({result['device']})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _part(res: dict) -> list[str]:
    p, ref = res["problem"], res["reference"]
    lines = [
        f"### {p['name']}: {res['model']}" + (" (biases penalised too)" if res["bias_penalty"] else ""),
        "",
        f"n_train={p['n_train']} (poison {p['n_poison']}), n_val={p['n_val']}, η={p['lr']}, "
        f"log λ={p['log_lam']:.2f}; exact reference: {ref['num_params']} parameters, float64, "
        f"‖∇w‖={ref['grad_norm']:.1e}, Hessian eigenvalues [{ref['hessian_min_eig']:.2e}, "
        f"{ref['hessian_max_eig']:.2e}].",
        "",
        "| method | setting | cosine | rel. error | log-λ rel. error | median (ms) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for key, label, field, _, _ in SERIES:
        lines += [
            f"| {label} | {field}={r[field]} | {fmt(r['cosine'], '.6f')} | {fmt(r['rel_error'], '.2e')} | "
            f"{fmt(r['log_lam_rel_error'], '.2e')} | {r['median_ms']:.2f} |"
            for r in res[key]
        ]
    return [*lines, ""]


def _goal(g: dict) -> list[str]:
    return [
        f"Cheapest reaching cosine >= {g['target_cosine']} (same η): RMD at T = "
        f"{g['rmd']['steps']} ({fmt(g.get('rmd_ms'), '.1f')} ms), IFT at T_train = "
        f"{g['ift']['steps']} ({fmt(g.get('ift_ms'), '.1f')} ms); IFT / RMD = "
        f"{fmt(g['ift_over_rmd'], '.2f')} (target <= 0.5).",
        "",
    ]


def _diagnostic(d: dict) -> list[str]:
    return [
        f"The paper's LeakyReLU MLP at the same size after {d['gd_steps']} GD steps: ‖∇w‖ = "
        f"{d['grad_norm_after_gd']:.1e}, Hessian min eigenvalue {d['hessian_min_eig']:.1e}, "
        f"{d['hidden_preactivations_within_1e-3_of_kink']} hidden pre-activations within 1e-3 of "
        "the kink: no smooth optimum to differentiate at, hence the smoothed reference.",
        "",
    ]


def markdown(result: dict) -> str:
    lines = []
    for part in ("lr", "mlp"):
        res = result[part]
        lines += _part(res)
        if "goal" in res:
            lines += _goal(res["goal"])
        if "grad_norm_after_gd" in res.get("paper_activation_diagnostic", {}):
            lines += _diagnostic(res["paper_activation_diagnostic"])
    return "\n".join(lines)
