"""The benchmark suite's entry point in --quick mode: every script runs and writes what a reader needs.

The suite runs once for the module (the ``suite`` fixture); the summary is also checked on minimal
JSON files.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # end to end: deselect with -m "not slow" for a fast loop

H2H_GOAL_IDS = {"h2h_compiles_all_counts", "h2h_cold_over_secml", "h2h_warm_over_secml"}  # secml_h2h, run apart
APART_GOAL_IDS = H2H_GOAL_IDS | {"dense_over_newton_cg", "second_run_compile"}  # dense_solver, compile_cache
GOAL_IDS = {
    "rmd_over_forward",
    "ift_over_rmd_to_0.999",
    "seeds_over_loop",
    "jax_over_torch",
    "checkpoint_memory",
    "paper_sweep_minutes",
    "import_seconds",
    "strong_sweep_minutes",
    *APART_GOAL_IDS,
}


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    """One ``python -m benchmarks --quick`` run of the suite (engine_peers aside) for this module, two
    benchmarks at a time: ``(folder, {name: its JSON})``."""
    names = ("hypergrad", "attack_step", "accuracy", "scaling", "batching", "peer", "import_time", "sweeps")
    out = tmp_path_factory.mktemp("bench")
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--jobs", "2", "--out", str(out), "--only", *names],
        cwd=Path(__file__).resolve().parents[1],
        capture_output=True,
        text=True,
        timeout=600,
    )
    logs = {name: (out / f"{name}.log").read_text()[-2000:] for name in names if (out / f"{name}.log").exists()}
    assert proc.returncode == 0, f"{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}\n{logs}"
    return out, {name: json.loads((out / f"{name}.json").read_text()) for name in names}


def test_every_script_writes_json_markdown_and_environment(suite):
    out, results = suite
    for name, result in results.items():
        assert result["benchmark"] == name and result["quick"] is True
        assert result["device"].startswith("cpu") and result["jax_version"]
        assert (out / f"{name}.md").read_text().strip()
    assert (out / "accuracy.png").stat().st_size > 10_000


def test_import_time_is_measured_in_fresh_interpreters_without_heavy_modules(suite):
    _, results = suite
    result = results["import_time"]
    assert 0 < result["min_s"] <= result["median_s"] <= result["max_s"]
    assert result["heavy_modules_loaded"] == []


def test_sweeps_time_the_whole_commands_and_keep_their_tables(suite):
    _, results = suite
    assert "paper" not in results["sweeps"] and results["sweeps"]["goals"]["paper_sweep_minutes"] is None  # --quick
    for name, preset in (("strong", "mnist5k-lr-strong"),):
        result = results["sweeps"][name]
        assert result["command"].startswith(f"poison-jax run --preset {preset} --set sweep.num_seeds=2")
        assert result["minutes"] == pytest.approx(result["wall_seconds"] / 60) and result["wall_seconds"] > 0
        assert 0 < result["compile_seconds"] < result["wall_seconds"]
        assert set(result["cell_seconds"]) == {"small", "large", "clean", "learned"}
        assert all(len(cells) == 2 for cells in result["cell_seconds"].values())  # cells 0 and 1
        assert "on 2 CPU device(s)" in result["devices_line"]
        assert result["table"].startswith("| poison (%) |") and "| 3.3 |" in result["table"]
        assert results["sweeps"]["goals"][f"{name}_sweep_minutes"] == result["minutes"]


def test_accuracy_rmd_approaches_exact_and_goal_is_costed(suite):
    _, results = suite
    lr = results["accuracy"]["lr"]
    assert lr["reference"]["hessian_min_eig"] > 0 and lr["reference"]["grad_norm"] < 1e-8
    rmd = lr["rmd_over_T"]
    assert [r["T"] for r in rmd] == sorted(r["T"] for r in rmd)
    assert rmd[-1]["cosine"] > rmd[0]["cosine"] and rmd[-1]["rel_error"] < rmd[0]["rel_error"]
    assert all(r["median_ms"] > 0 for r in rmd)
    ift_cg = lr["ift_over_cg_iters"]
    assert ift_cg[-1]["cosine"] > 0.9999  # CG to convergence at the converged w* is the exact answer
    assert lr["goal"]["ift_over_rmd"] > 0
    mlp = results["accuracy"]["mlp"]
    assert mlp["reference"]["strongly_convex"] and mlp["reference"]["hessian_min_eig"] > 0
    assert mlp["rmd_over_T"] and mlp["ift_over_cg_iters"]


def test_scaling_checkpointing_saves_memory(suite):
    _, results = suite
    over_t = results["scaling"]["over_T"]
    last = over_t["rows"][-1]
    assert last["checkpointed_temp_bytes"] < last["plain_temp_bytes"]
    assert over_t["slope_temp_checkpointed"] < over_t["slope_temp_plain"]
    for axis in ("d", "n_train", "seeds"):
        rows = results["scaling"][f"over_{axis}"]["rows"]
        assert len(rows) >= 2 and all(r["median_ms"] > 0 and r["temp_bytes"] > 0 for r in rows)
    seeds = results["scaling"]["over_seeds"]["rows"]
    assert seeds[-1]["temp_bytes"] > seeds[0]["temp_bytes"]  # vmap's buffers grow with the seeds


def test_batching_compares_loop_vmap_sharding_and_projects_the_sweep(suite):
    _, results = suite
    b = results["batching"]
    assert b["one_device"]["loop_ms"] > 0 and b["one_device"]["vmap_ms"] > 0
    assert b["sharded"]["devices"] == (os.cpu_count() or 1)  # one XLA device per CPU core
    assert b["sharded"]["ms"]["sharded"] > 0 and b["sharded"]["ms"]["lanes"] > 0
    assert b["goals"]["seeds_over_loop"] == b["sharded"]["lanes_over_loop"]
    assert b["jit_vs_no_jit"]["no_jit_over_jit"] > 1
    p = b["sweep_projection"]
    assert p["hypergradients_per_seed"] == 2550 and p["projected_minutes"] > 0
    assert b["profile"]["one_seed_flops"] > 0 and b["diagnosis"]


def test_peer_measures_torch_or_names_the_extra(suite):
    _, results = suite
    peer = results["peer"]
    assert peer["poison_jax_ms"] > 0
    if "skipped" in peer["torch"]:
        assert "poison-jax[bench]" in peer["torch"]["skipped"]
        assert peer["goals"]["jax_over_torch"] is None
    else:
        assert peer["poison_jax_over_torch"] > 0
        assert peer["torch"]["agreement"]["cosine"] > 0.999


def test_summary_lists_every_goal(suite):
    out, results = suite
    summary = json.loads((out / "summary.json").read_text())
    assert summary["quick"] is True
    rows = {row["id"]: row for row in summary["goals"]}
    assert set(rows) == GOAL_IDS
    for goal_id in APART_GOAL_IDS:  # not in the suite: its JSON, where one is in the folder, is an earlier run's
        assert rows[goal_id]["met"] is None and "not run" in rows[goal_id]["note"]
    assert rows["paper_sweep_minutes"]["measured"] is None  # --quick times the strong command alone
    for goal_id in GOAL_IDS - {"jax_over_torch", "paper_sweep_minutes"} - APART_GOAL_IDS:
        assert rows[goal_id]["measured"] > 0 and rows[goal_id]["met"] in (True, False), rows[goal_id]
        assert rows[goal_id]["measured"] == results[rows[goal_id]["source"][: -len(".json")]]["goals"][goal_id]
    torch = rows["jax_over_torch"]
    if "skipped" in results["peer"]["torch"]:  # torch is an optional extra: the summary says why
        assert torch["met"] is None and "poison-jax[bench]" in torch["note"]
    for row in rows.values():
        if row["met"] is False:
            assert row["why_missed"]
    text = (out / "summary.md").read_text()
    assert "| goal | measured | target | met |" in text and "--quick" in text


def test_summary_reads_hypergrad_and_attack_step_results(tmp_path):
    from benchmarks.summary import summarise

    (tmp_path / "hypergrad.json").write_text(
        json.dumps(
            {
                "device": "cpu:cpu",
                "jax_version": "x",
                "goals": {"rmd_over_forward": 2.7},
                "rows": [{"method": "forward unroll", "median_ms": 1.0}, {"method": "RMD", "median_ms": 2.7}],
            }
        )
    )
    mlp = {
        "plain": {"xla_temp_mb": 900.0, "peak_rss_above_baseline_mb": 920.0},
        "checkpointed": {"xla_temp_mb": 68.0, "peak_rss_above_baseline_mb": 86.0},
        "time_ratio": 1.4,
        "peak_rss_ratio": 0.093,
    }
    attack_step = {"mlp_checkpointing": mlp, "goals": {"checkpoint_memory": 0.093}}
    (tmp_path / "attack_step.json").write_text(json.dumps(attack_step))
    summary = summarise(tmp_path, status={}, quick=False)
    rows = {row["id"]: row for row in summary["goals"]}
    assert rows["rmd_over_forward"]["met"] is False and "2.70 ms" in rows["rmd_over_forward"]["why_missed"]
    assert rows["checkpoint_memory"]["met"] is True and rows["checkpoint_memory"]["measured"] == 0.093
    assert rows["jax_over_torch"]["met"] is None and "not run" in rows["jax_over_torch"]["note"]
    assert "**no**" in (tmp_path / "summary.md").read_text()


def test_device_option_picks_the_platform_or_names_a_missing_one():
    import jax

    from benchmarks.harness import environment, select_device

    previous = jax.config.jax_default_device
    try:
        if jax.default_backend() == "cpu":
            with pytest.raises(RuntimeError, match="--device gpu"):
                select_device("gpu")
        select_device("cpu")
        assert environment()["device"].startswith("cpu")
    finally:
        jax.config.update("jax_default_device", previous)


def test_peer_without_torch_records_why(monkeypatch, tmp_path):
    from benchmarks import peer

    monkeypatch.setitem(sys.modules, "torch", None)  # import torch raises ImportError
    result = peer.main(["--quick", "--out", str(tmp_path)])
    assert result["torch"] == {"skipped": "torch not installed: pip install 'poison-jax[bench]'"}
    assert result["poison_jax_ms"] > 0
    assert "skipped" in (tmp_path / "peer.md").read_text()


def test_harness_times_calls_in_interleaved_rounds_after_warmup():
    from benchmarks.harness import time_calls

    order = []
    calls = {"a": lambda: order.append("a"), "b": lambda: order.append("b")}
    times = time_calls(calls, repeats=3, warmup=2)
    assert order == ["a", "a", "b", "b"] + ["a", "b"] * 3  # warm-up of each, then one of each per round
    for t in times.values():
        assert len(t.samples) == 3 and 0 <= t.minimum <= t.median


def test_harness_goal_and_json_conventions():
    import numpy as np

    from benchmarks.goals import BY_ID, GOALS
    from benchmarks.harness import jsonable

    assert len(BY_ID) == len(GOALS) and set(BY_ID) == GOAL_IDS  # ids are unique
    goal = BY_ID["rmd_over_forward"]
    assert (goal.met(2.5), goal.met(2.6), goal.met(None)) == (True, False, None)
    assert jsonable({"x": (np.float32(1.5), float("nan")), 2: np.int64(3), "b": np.bool_(True)}) == {
        "x": [1.5, None],
        "2": 3,
        "b": True,
    }


def test_hypergrad_benchmark_quick(suite):
    out, results = suite
    saved = results["hypergrad"]
    methods = {row["method"] for row in saved["rows"]}
    assert {"forward unroll", "RMD", "IFT solve (given w*)"} <= methods
    assert all(row["median_ms"] > 0 for row in saved["rows"])
    assert saved["goals"]["rmd_over_forward"] > 1.0  # a reverse pass costs something
    assert saved["device"].startswith("cpu") and saved["jax_version"]
    assert (out / "hypergrad.md").read_text().startswith("| method |")


def test_attack_step_benchmark_quick(suite):
    out, results = suite
    saved = results["attack_step"]
    loop = saved["lr_vmap_vs_loop"]
    assert loop["vmap_ms"] > 0 and loop["loop_ms"] > 0
    mlp = saved["mlp_checkpointing"]
    # Checkpointing must shrink the buffers XLA plans for the reverse pass.
    assert mlp["checkpointed"]["xla_temp_mb"] < mlp["plain"]["xla_temp_mb"]
    assert saved["goals"]["checkpoint_memory"] == mlp["peak_rss_ratio"]  # on the CPU: host memory
    assert "ratio vmap / loop" in (out / "attack_step.md").read_text()
