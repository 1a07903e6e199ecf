"""The engine_peers table and figure."""

from __future__ import annotations

from pathlib import Path

from benchmarks.engine_peers.candidates import CG_YARDSTICK_STEPS
from benchmarks.engine_peers.compare import GOAL, TARGET_COSINE
from benchmarks.harness import fmt, fmt_ms


def _header(result: dict) -> list[str]:
    p, ref, t = result["problem"], result["reference"], result["timing"]
    return [
        f"### {p['name']}: hypergradient against JAX's bilevel tools"
        + (" — **--quick: not the goal's settings**" if result["quick"] else ""),
        "",
        f"n_train={p['n_train']} (poison {p['n_poison']}, replace mode), n_val={p['n_val']}, d={p['d']}, "
        f"log λ={p['log_lam']}; theta = xp {tuple(result['theta_shapes']['xp'])} + log λ, float32. Reference: "
        f"exact hypergradient in float64 at a Newton optimum, ‖∇w‖ = {ref['grad_norm']:.1e} "
        f"({ref['newton_iterations']} Newton steps), Hessian eigenvalues [{ref['hessian_min_eig']:.2e}, "
        f"{ref['hessian_max_eig']:.2e}]. {result['device']}, {result['cpu_count']} CPUs, JAX "
        f"{result['jax_version']}, optimistix {result['versions']['optimistix']}, jaxopt "
        f"{result['versions']['jaxopt']}; median of {t['repeats']} interleaved warm calls; load average "
        f"{t['load_average_before'][0]:.2f} before, {t['load_average_after'][0]:.2f} after (this process "
        "included)."
        + (
            " **The machine was busy with other work: compare the minimum times too.**"
            if t["load_average_before"][0] > t["max_load"]
            else ""
        ),
        "",
        "Inner iters: gradient steps, Newton or quasi-Newton iterations; ‖∇w‖ at the returned w "
        "(float32); CG iters: poison_jax's adjoint solve (the peers' adjoint solves report nothing). "
        f"CG steps: the row's time in units of one conjugate-gradient step on this problem's Hessian "
        f"(a Hessian-vector product and the vector updates; {fmt(result.get('cg_step_ms'), '.3f')} ms, "
        f"timed among the rows as {CG_YARDSTICK_STEPS} steps in one call): what a row would cost if "
        "nothing but such steps ran.",
        "",
        "| method | settings | ms (median) | ms (min) | cosine | log-λ rel. error | reaches 0.999 | inner iters "
        "| ‖∇w‖ | CG iters | CG steps |",
        "|---|---|---:|---:|---:|---:|:---:|---:|---:|---:|---:|",
    ]


def _rows(result: dict) -> list[str]:
    lines = []
    for r in result["rows"]:
        cos = r["cosine"]
        cos_s = "—" if cos is None else (f"{cos:.6f}" if cos < 0.9999995 else "1.000000")
        lines.append(
            f"| {r['family']} | {r['settings']} | {fmt_ms(r['median_ms'])} | {fmt_ms(r['min_ms'])} | {cos_s} | "
            f"{fmt(r['log_lam_rel_error'], '.1e')} | {'yes' if r['reaches_target'] else 'no'} | "
            f"{r.get('solve_iterations', '—')} | {fmt(r.get('inner_grad_norm'), '.1e')} | "
            f"{r.get('cg_iterations', '—')} | {fmt(r.get('cg_step_equivalents'), '.0f')} |"
        )
    return lines


def _fastest(result: dict) -> list[str]:
    lines = [
        "",
        f"Fastest setting of each family reaching cosine >= {result['target_cosine']}:",
        "",
        "| family | settings | ms | cosine |",
        "|---|---|---:|---:|",
    ]
    for family, r in result["fastest_reaching_target"].items():
        if r:
            lines.append(f"| {family} | {r['settings']} | {fmt_ms(r['median_ms'])} | {r['cosine']:.6f} |")
        else:
            lines.append(f"| {family} | none reaches it | — | — |")
    lines.append("")
    for f in result.get("failed", []):
        lines.append(f"- failed, not timed: {f['family']} ({f['settings']}): {f['error']}: {f['message']}")
    for pkg, why in result.get("skipped", {}).items():
        lines.append(f"- {pkg}: skipped ({why})")
    return lines


def _ratios(result: dict) -> list[str]:
    lines = []
    labels = {
        "cold_vs_cold": "**headline** (cold start, both; peers with the best adjoint we found)",
        "cold_vs_cold_default_adjoint": "cold start, peers with their default adjoint solve",
        "warm_vs_warm": "warm start, both",
        "warm_vs_cold_peer": "poison_jax warm / peer cold (not like for like)",
        "any_vs_any": "any poison_jax row / any peer row",
    }
    for key, label in labels.items():
        r = result["ratios"][key]
        lines.append(
            f"- {label}: {r['poison_jax']} {fmt_ms(r['poison_jax_ms'])} ms / {r['peer']} "
            f"{fmt_ms(r['peer_ms'])} ms = **{fmt(r['ratio'], '.2f')}** (minimum times: "
            f"{fmt(r['ratio_of_minimum_times'], '.2f')})"
            + (
                f" (goal <= {GOAL.target}: {'met' if result['goal_met'] else 'not met'})"
                if key == "cold_vs_cold" and r["ratio"] is not None
                else ""
            )
        )
    step, cold = result.get("cg_step_ms"), result["ratios"]["cold_vs_cold"]
    if step and cold["ratio"] is not None:
        ours, peer = cold["poison_jax_ms"] / step, cold["peer_ms"] / step
        lines.append(
            f"- in CG steps ({step:.3f} ms each): the headline's poison_jax path costs {ours:.0f}, the peer "
            f"{peer:.0f}; the goal needs at most {GOAL.target * peer:.0f}"
        )
    return lines


def markdown(result: dict) -> str:
    return "\n".join(_header(result) + _rows(result) + _fastest(result) + _ratios(result))


MARKERS = "osDv^<>PXh*p"


def plot(result: dict, path: Path) -> None:
    """1 - cosine against time, one line per family; cold starts left, warm starts right."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bases = list(dict.fromkeys(r["family"].removesuffix(" warm") for r in result["rows"]))
    style = {b: (MARKERS[i % len(MARKERS)], f"C{i % 10}") for i, b in enumerate(bases)}
    floor = 1e-9
    fig, axes = plt.subplots(1, 2, figsize=(13, 5.5), sharey=True)
    for ax, warm in zip(axes, (False, True), strict=False):
        for base in bases:
            rows = sorted(
                (
                    r
                    for r in result["rows"]
                    if r["family"].removesuffix(" warm") == base and r["warm"] == warm and r["cosine"] is not None
                ),
                key=lambda r: r["median_ms"],
            )
            if not rows:
                continue
            marker, colour = style[base]
            ax.loglog(
                [r["median_ms"] for r in rows],
                [max(1 - r["cosine"], floor) for r in rows],
                marker=marker,
                color=colour,
                ls="-" if base.startswith("poison_jax") else "--",
                label=base,
            )
        ax.axhline(1 - TARGET_COSINE, color="grey", ls=":", label=f"cosine = {TARGET_COSINE}")
        ax.set_xlabel("median warm wall time (ms)")
        ax.set_title(
            "inner solve from w0 = 0 (cold)"
            if not warm
            else "inner solve from the previous hyperiteration's solution (warm)",
            fontsize=9,
        )
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    axes[0].set_ylabel(f"1 - cosine to the exact hypergradient (floor {floor:g})")
    p = result["problem"]
    fig.suptitle(
        f"{p['name']}, {p['n_train']} train ({p['n_poison']} poison), float32; {result['device']}, "
        f"{result['cpu_count']} CPUs" + (" (--quick)" if result["quick"] else ""),
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
