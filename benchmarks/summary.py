"""``summary.json`` and ``summary.md``: the goals of :mod:`benchmarks.goals` collected from the
benchmarks' JSON files (measured figure, target, met or not, and why a goal is missed)."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks.goals import GOALS, NOTES, get
from benchmarks.harness import Goal

# The suite, in the order it runs.
BENCHMARKS = (
    "hypergrad",
    "attack_step",
    "accuracy",
    "scaling",
    "batching",
    "peer",
    "engine_peers",
    "import_time",
    "sweeps",
    "compile_cache",
    "kernel_launches",
)


def load(out: Path, name: str) -> dict | None:
    """``out/NAME.json``, or ``None`` if it is missing or unreadable."""
    path = out / f"{name}.json"
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _goal_row(goal: Goal, result: dict | None, status: dict) -> dict:
    measured = get(result, "goals", goal.id)
    met = goal.met(measured)
    if result is None:
        note = f"not run (python -m benchmarks.{goal.source})"
        if status.get(goal.source, {}).get("returncode"):
            note = f"{goal.source} failed: see {goal.source}.log"
    else:
        note = NOTES[goal.id](result) if not met else None
    return {
        "id": goal.id,
        "goal": goal.text,
        "measured": measured,
        "target": goal.target,
        "met": met,
        "source": f"{goal.source}.json",
        "from_this_run": goal.source in status,
        "why_missed": note if met is False else None,
        "note": note if met is not False else None,
    }


def _extras(results: dict) -> dict:
    """Figures that are no goal but worth a line."""
    extras = {}
    if results["scaling"]:
        t = results["scaling"]["over_T"]
        extras["checkpointed temp-buffer slope over T (sqrt(T): 0.5)"] = t["slope_temp_checkpointed"]
        extras["plain temp-buffer slope over T (T: 1.0)"] = t["slope_temp_plain"]
    batching = results["batching"]
    if batching:
        extras["vmap on one device / Python loop"] = batching["one_device"]["vmap_over_loop"]
        jit = batching["jit_vs_no_jit"]
        extras[f"no jit / jit (RMD, T = {jit['steps']})"] = jit["no_jit_over_jit"]
    if results["accuracy"]:
        rmd150 = next((row for row in results["accuracy"]["lr"]["rmd_over_T"] if row["T"] == 150), None)
        if rmd150:
            extras["RMD cosine to exact at the paper's T = 150 (LR)"] = rmd150["cosine"]
    return extras


def summarise(out_dir, status: dict | None = None, quick: bool | None = None) -> dict:
    """Collect the goals from the benchmarks' JSON files under ``out_dir`` into ``summary.json`` and
    ``summary.md``. ``status`` (name -> dict) is what the runner knows about each run."""
    out = Path(out_dir)
    status = dict(status or {})
    results = {name: load(out, name) for name in (*BENCHMARKS, *(g.source for g in GOALS))}  # some run apart
    if quick is None:
        quick = any(r.get("quick") for r in status.values())
    env = next((r for r in results.values() if r), {}) or {}
    summary = {
        "quick": quick,
        "note": "--quick: small sizes, not the goals' settings" if quick else None,
        "device": env.get("device"),
        "jax_version": env.get("jax_version"),
        "cpu_count": env.get("cpu_count"),
        "goals": [_goal_row(g, results[g.source], status) for g in GOALS],
        "extras": _extras(results),
        "benchmarks": {name: {"ran": results[name] is not None, **status.get(name, {})} for name in BENCHMARKS},
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    (out / "summary.md").write_text(summary_markdown(summary) + "\n")
    return summary


def _fmt(x) -> str:
    return "—" if x is None else (f"{x:.3g}" if abs(x) < 100 else f"{x:.0f}")


def summary_markdown(summary: dict) -> str:
    head = f"Benchmark goals ({summary['device']}, JAX {summary['jax_version']}, {summary['cpu_count']} CPUs)"
    if summary["quick"]:
        head += " — **--quick run: small sizes, not the goals' settings**"
    lines = [head, "", "| goal | measured | target | met | source |", "|---|---:|---:|:---:|---|"]
    for row in summary["goals"]:
        met = {True: "yes", False: "**no**", None: "—"}[row["met"]]
        source = row["source"] + ("" if row["from_this_run"] or row["measured"] is None else " (earlier run)")
        lines.append(f"| {row['goal']} | {_fmt(row['measured'])} | <= {_fmt(row['target'])} | {met} | {source} |")
    missed = [row for row in summary["goals"] if row["met"] is False]
    if missed:
        lines += ["", "Why the missed goals are missed (from the benchmarks' profiles):", ""]
        lines += [f"- **{row['id']}**: {row['why_missed']}" for row in missed]
    open_ = [row for row in summary["goals"] if row["met"] is None]
    if open_:
        lines += ["", "Not measured:", ""] + [f"- **{row['id']}**: {row['note']}" for row in open_]
    if summary["extras"]:
        lines += ["", "| also measured | value |", "|---|---:|"]
        lines += [f"| {k} | {_fmt(v)} |" for k, v in summary["extras"].items()]
    return "\n".join(lines)
