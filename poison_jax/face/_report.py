"""The text reports of :mod:`poison_jax.face.plots` (their one public path): the summary table and the
check of the inner problem's convergence."""

from __future__ import annotations

import numpy as np

from poison_jax.face._records import by_setting, diagnostics_of, is_regression, seed_values


def diagnostics_check(records, diagnostics: dict, config: dict | None = None) -> list[str]:
    """Lines saying whether the inner problem was solved (IFT's assumption ``grad_w L(w*) = 0``).

    Per Λ setting, over its cells and seeds, the worst ``||grad_w inner||`` at the last
    hyperiteration of a cell, also as a fraction of its value at ``w(0)`` (``inner_grad_norm_init``),
    and the worst CG residual there against ``cg_tol`` (IFT and implicit; RMD solves no linear
    system). ``records`` of one folder, ``diagnostics`` keyed ``(setting, cell)``, ``config`` its
    ``config.json``'s ``"config"`` by dotted path (``legacy.flatten``: for the tolerances and method).
    Without diagnostics the lines say so.
    """
    config = config or {}
    method = config.get("method") or next((r.get("hypergrad") for r in records if r.get("hypergrad")), "?")
    with_iters = [(r, d) for r in records if (d := diagnostics_of(diagnostics, r)) is not None]
    if not with_iters:
        return [
            "IFT assumption check: no diagnostics in this folder (written before poison-jax kept them, or no "
            "cell finished since): the attack_objective figure and this check are skipped"
        ]
    missing = len(records) - len(with_iters)
    head = (
        "IFT assumption check (∇_w L ≈ 0 at w*)"
        if method != "rmd"
        else "Inner convergence check (RMD does not assume ∇_w L ≈ 0)"
    )
    head += ", from diagnostics/: last hyperiteration of each cell, worst seed and cell" + (
        f"; {missing} of {len(records)} finished cells have no diagnostics" if missing else ""
    )
    found = {id(r): d for r, d in with_iters}
    tolerances = {"cg_tol": config.get("method.cg_tol"), "solver_tol": config.get("method.solver.tol")}
    return [head] + [
        _setting_line(rs, [found[id(r)] for r in rs], method, **tolerances)
        for rs in by_setting([r for r, _ in with_iters]).values()
    ]


def _last_hyperiteration(cells: list[dict]) -> tuple[list, list, list, int]:
    """Over the cells of one setting: the inner gradient norms at each cell's last hyperiteration,
    those as a fraction of their value at ``w(0)``, the CG residuals there, and how many inner solves
    did not converge. Cells without hyperiterations (cell 0 of a fixed λ) are left out."""
    grad, ratios, cg, unconverged = [], [], [], 0
    for d in cells:
        norms = np.asarray(d["inner_grad_norm"], np.float64)
        if norms.ndim != 2 or norms.shape[1] == 0:
            continue
        last = norms[:, -1]
        grad.append(last)
        init = np.asarray(d.get("inner_grad_norm_init", np.full(len(last), np.nan)), np.float64)
        ratios.append(last / np.where(init > 0, init, np.nan))
        residual = d.get("adjoint_residual", d.get("cg_residual"))  # cg_residual: a folder written by 0.1.0
        if residual is not None:
            cg.append(np.asarray(residual, np.float64)[:, -1])
        if "inner_converged" in d:
            unconverged += int(np.logical_not(d["inner_converged"]).sum())
    return grad, ratios, cg, unconverged


def _setting_line(rs: list[dict], cells: list[dict], method: str, *, cg_tol, solver_tol) -> str:
    """The check's line for one setting's records ``rs`` and their diagnostics ``cells``."""
    label = rs[0].get("_base_label", rs[0]["label"])
    grad, ratios, cg, unconverged = _last_hyperiteration(cells)
    if not grad:
        return f"  {label}: no hyperiteration"
    grad_max, ratio = worst(np.concatenate(grad)), np.concatenate(ratios)
    ratio_max = worst(ratio[np.isfinite(ratio)]) if np.isfinite(grad_max) else float("nan")
    text = f"  {label}: inner gradient norm max {grad_max:.1e}"
    if np.isfinite(ratio_max):
        text += f" ({100 * ratio_max:.2g} % of its value at w(0))"
    if method == "implicit" and solver_tol is not None:
        text += f", solver_tol {solver_tol:g}: " + ("met" if grad_max <= solver_tol else "NOT met")
    if method == "rmd" or not cg:
        text += "; CG residual: none (RMD solves no linear system)"
    else:
        cg_max = worst(np.concatenate(cg))
        text += f"; CG residual max {cg_max:.1e}"
        if cg_tol is not None:
            met = cg_max <= cg_tol
            text += f" {'≤' if met else '>'} cg_tol {cg_tol:g}" + ("" if met else " (NOT met)")
    if unconverged:
        text += f"; {unconverged} unconverged inner solve(s)"
    return text


def worst(values) -> float:
    """The largest value, a non-finite one (a diverged seed) counting as inf; NaN when there is none."""
    values = np.asarray(values, np.float64)
    return float(np.max(np.where(np.isfinite(values), values, np.inf))) if values.size else float("nan")


def summary_table(records) -> str:
    """Markdown table: one row per fraction, per setting the mean test error ± std (%) and mean log-λ
    (for a regression's records the test MSE ± std)."""
    curves = by_setting(records)
    regression = is_regression(records)
    metric = "test MSE" if regression else "error (%)"
    fractions = sorted({(r["cell"], r["fraction"]) for r in records})
    head = "| poison (%) | " + " | ".join(f"{rs[0]['label']}: {metric} | log λ" for rs in curves.values()) + " |"
    rows = [head, "|---:|" + "---:|---:|" * len(curves)]
    for cell, fraction in fractions:
        cols = []
        for rs in curves.values():
            r = next((r for r in rs if r["cell"] == cell), None)
            err = seed_values(r, "error") if r else np.array([])
            lam = r["mean"]["log_lam"] if r else None
            if not err.size:
                cols.append("–")
            elif regression:
                cols.append(f"{err.mean():.4f} ± {err.std():.4f}")
            else:
                cols.append(f"{100 * err.mean():.1f} ± {100 * err.std():.1f}")
            cols.append(", ".join(f"{v:.2f}" for v in lam) if lam else "–")
        rows.append(f"| {100 * fraction:.1f} | " + " | ".join(cols) + " |")
    return "\n".join(rows) + _defence_table(curves, fractions)


#: The defence table's columns: the per-seed key, its header, how a mean over seeds is written and
#: whether it is about the poison points (none in cell 0: "–").
_DEFENCE_COLUMNS = (
    ("defence_recall", "poison removed (%)", lambda v: f"{100 * v:.1f}", True),
    ("defence_false_positive_rate", "clean removed (%)", lambda v: f"{100 * v:.1f}", False),
    ("defence_poison_relabelled", "poison relabelled", lambda v: f"{v:.1f}", True),
    ("defence_clean_relabelled", "clean relabelled", lambda v: f"{v:.1f}", False),
)


def _defence_table(curves: dict, fractions: list) -> str:
    """For records of a run with a defence, a second table: per setting, the share of the poison
    points it removed (recall) and of the clean points (false-positive rate), and for a defence that
    relabels, how many poison and clean points it relabelled; means over seeds."""
    records = [r for rs in curves.values() for r in rs]
    columns = [c for c in _DEFENCE_COLUMNS if any(c[0] in r["per_seed"] for r in records)]
    if not columns:
        return ""
    head = "| poison (%) | " + " | ".join(
        f"{rs[0]['label']}: " + " | ".join(c[1] for c in columns) for rs in curves.values()
    )
    rows = ["", "", "The defence, mean over seeds:", "", head + " |", "|---:|" + "---:|" * len(columns) * len(curves)]
    for cell, fraction in fractions:
        cols = []
        for rs in curves.values():
            r = next((r for r in rs if r["cell"] == cell and columns[0][0] in r["per_seed"]), None)
            for key, _, written, about_poison in columns:
                values = seed_values(r, key) if r else np.array([])
                cols.append(written(values.mean()) if values.size and (cell or not about_poison) else "–")
        rows.append(f"| {100 * fraction:.1f} | " + " | ".join(cols) + " |")
    return "\n".join(rows)
