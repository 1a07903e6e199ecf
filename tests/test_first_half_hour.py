"""What a new user meets first: output folders, refused settings, reused cells, log-λ names, the
presets command and the CPU cores."""

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import poison_jax
from poison_jax.experiments import _records as sweep_records
from poison_jax.experiments import config, devices, presets, sweep
from poison_jax.experiments.checked import ConfigError
from poison_jax.experiments.store import ResultsStore
from poison_jax.face import cli
from tests.tiny import tiny, tiny_sets

TINY_SETS = tiny_sets()


def _records(out):
    return [json.loads(line) for line in (Path(out) / "results.jsonl").read_text().splitlines()]


# -- 1. output folders ----------------------------------------------------------------------


@pytest.mark.slow
def test_failed_run_leaves_nothing_and_the_next_preset_runs(tmp_path, monkeypatch, capsys):
    """The imagenet-then-digits sequence: the default --out is named after the preset, and a run
    that cannot load its data writes nothing."""
    monkeypatch.chdir(tmp_path)
    assert cli.main(["run", "--preset", "imagenet-lr", "--no-progress"]) == 2
    assert "data.path" in capsys.readouterr().err
    assert not (tmp_path / "results").exists()
    assert cli.main(["run", "--preset", "imagenet-lr", "--out", "shared", "--no-progress"]) == 2
    assert not (tmp_path / "shared").exists()

    assert cli.main(["run", "--preset", "digits-lr", *TINY_SETS, "--set", "sweep.settings=small", "--no-progress"]) == 0
    assert len(_records(tmp_path / "results" / "digits-lr")) == 3
    assert (
        cli.main(
            [
                "run",
                "--preset",
                "digits-lr",
                *TINY_SETS,
                "--set",
                "sweep.settings=small",
                "--out",
                "shared",
                "--no-progress",
            ]
        )
        == 0
    )


def test_folder_without_finished_cell_is_taken_over(tmp_path):
    other = tiny({"attack.alpha": 0.5})
    ResultsStore(tmp_path, other).release()  # config.json of another config, no finished cell
    (tmp_path / "state" / "small-0.npz").write_bytes(b"left over")
    lines = []
    config = tiny({"sweep.settings": ("small",)})
    records = sweep.run_sweep(config, tmp_path, progress=False, log=lines.append)
    assert len(records) == 3
    assert any("taken over" in line and other.hash() in line for line in lines)
    assert json.loads((tmp_path / "config.json").read_text())["hash"] == config.hash()


def test_folder_with_finished_cells_of_another_config_is_refused(tmp_path):
    sweep.run_sweep(
        tiny({"attack.num_batches": 1, "sweep.settings": ("small",)}),
        tmp_path,
        progress=False,
        log=lambda _: None,
    )
    with pytest.raises(ValueError, match="holds results of another config.*attack.alpha: 0.99 there, 0.5 here"):
        sweep.run_sweep(
            tiny({"attack.num_batches": 1, "attack.alpha": 0.5, "sweep.settings": ("small",)}),
            tmp_path,
            progress=False,
            log=lambda _: None,
        )


# -- 2. no silently ignored settings: a choice holds only what it reads ------------------------


@pytest.mark.parametrize(
    "overrides, path, owner",
    [
        ({"data.path": "/some/file.npz"}, "data.path", "data 'digits'"),
        ({"data.data_dir": "/tfds"}, "data.data_dir", "data 'digits'"),
        ({"model.hidden": (64,)}, "model.hidden", "model 'lr'"),
        ({"method": "ift", "method.checkpoint": True}, "method.checkpoint", "method 'ift'"),
        ({"method": "implicit", "method.steps": 300}, "method.steps", "method 'implicit'"),
        ({"method.cg_tol": 1e-3}, "method.cg_tol", "method 'rmd'"),
        ({"victim.solver.tol": 1e-3}, "victim.solver", "victim 'sgd'"),
        ({"method": "implicit", "victim": "converged", "victim.epochs": 7}, "victim.epochs", "victim 'converged'"),
        ({"attack.xp_step.min_scale": 0.5}, "attack.xp_step.min_scale", "attack.xp_step 'normalised'"),
    ],
)
def test_a_setting_no_choice_reads_cannot_be_written(overrides, path, owner):
    field = path.rsplit(".", 1)[-1]
    with pytest.raises(ConfigError, match=re.escape(owner) + f" has no (field|section) {field!r}"):
        presets.preset("digits-lr", overrides)


def test_changing_a_choice_keeps_the_presets_values():
    """Switching the method of a paper preset keeps the rest; the hash is 0.1.0's for the same switch."""
    config = presets.preset("digits-lr", {"method": "implicit", "method.solver.tol": 1e-4, "victim": "converged"})
    assert config.attack == presets.preset("digits-lr").attack and not hasattr(config.method, "steps")
    assert presets.preset("imagenet-mlp").method.checkpoint is True


def test_cli_refuses_a_field_of_another_choice_in_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["run", "--preset", "digits-lr", "--set", "data.path=/some/file.npz"]) == 2
    err = capsys.readouterr().err
    assert "data 'digits' has no field 'path'" in err and "switch data first" in err and "Traceback" not in err
    assert not (tmp_path / "results").exists()


# -- 3. no repeated work ----------------------------------------------------------------------


@pytest.mark.slow
def test_equal_lambda_cells_are_copied_and_equal_a_computed_run(tmp_path):
    same = {"sweep.log_lam_large": -8.0}  # large λ = small λ for every seed: the same computation
    log = []
    records = sweep.run_sweep(
        tiny({**same, "sweep.settings": ("small", "large")}),
        tmp_path / "both",
        progress=False,
        log=log.append,
    )
    by_cell = {(r["setting"], r["cell"]): r for r in records}
    assert [by_cell[("large", c)]["reused_from"] for c in range(3)] == [None, "small", "small"]
    assert by_cell[("small", 1)]["reused_from"] is None
    for cell in (1, 2):
        assert by_cell[("large", cell)]["per_seed"] == by_cell[("small", cell)]["per_seed"]
        assert (tmp_path / "both" / "state" / f"large-{cell}.npz").exists()

    computed = sweep.run_sweep(
        tiny({**same, "sweep.settings": ("large",)}),
        tmp_path / "alone",
        progress=False,
        log=lambda _: None,
    )
    for record in computed:
        assert record["reused_from"] is None
        copied = by_cell[("large", record["cell"])]
        for metric in ("error", "log_lam", "sq_norm", "val_loss"):
            assert np.array_equal(
                np.asarray(record["per_seed"][metric], float), np.asarray(copied["per_seed"][metric], float)
            ), metric


@pytest.mark.slow
def test_reuse_survives_resume_with_a_grown_settings_list(tmp_path):
    same = {"sweep.log_lam_large": -8.0}
    sweep.run_sweep(tiny({**same, "sweep.settings": ("small",)}), tmp_path, progress=False, log=lambda _: None)
    records = sweep.run_sweep(
        tiny({**same, "sweep.settings": ("small", "large")}),
        tmp_path,
        resume=True,
        progress=False,
        log=lambda _: None,
    )
    assert [r["reused_from"] for r in records if r["setting"] == "large"] == [None, "small", "small"]


def test_different_lambdas_are_computed(tmp_path):
    records = sweep.run_sweep(
        tiny({"sweep.settings": ("small", "large")}),
        tmp_path,
        progress=False,
        log=lambda _: None,
    )
    assert all(r["reused_from"] is None for r in records)


# -- 4. names say log λ -------------------------------------------------------------------------


def test_log_lambda_fields_say_so_in_their_paths():
    rows = {path for path, _, _ in config.describe(presets.preset("digits-lr"))}
    assert {"attack.log_lam_box", "attack.log_lam_init", "sweep.log_lam_small", "sweep.log_lam_large"} <= rows
    old = {"lam_box", "lam_init", "lam_small", "lam_large", "cv_grid"}  # 0.1.0's first names
    assert "sweep.cv_log_lam_grid" in rows and not any(p.rsplit(".", 1)[-1] in old for p in rows)


def test_renamed_fields_keep_the_config_hash_of_existing_folders():
    # The hash the mnist5k-lr preset had before the renames (folders written then still resume).
    assert presets.preset("mnist5k-lr").hash() == "49df2a2d9b7f1d8e"


def test_labels_and_tables_say_log_lambda():
    from poison_jax.face import plots

    c = presets.preset("digits-lr", {"sweep.log_lam_small": -6.0})
    assert config.setting_label(c, "small") == "log λ = -6"
    record = {
        "setting": "small",
        "label": "log λ = -6",
        "cell": 0,
        "fraction": 0.0,
        "per_seed": {"error": [0.1]},
        "mean": {"log_lam": [-6.0]},
    }
    assert "log λ = -6: error (%) | log λ |" in plots.summary_table([record])


# -- 5. discoverable ----------------------------------------------------------------------------


def test_presets_lists_every_preset_in_one_line_each(capsys):
    assert cli.main(["presets"]) == 0
    out = capsys.readouterr().out.splitlines()
    for name in presets.PRESETS:
        assert sum(line.startswith(name + " ") for line in out) == 1


def test_presets_name_shows_every_field_with_value_and_meaning(capsys):
    assert cli.main(["presets", "mnist5k-lr-strong"]) == 0
    out = capsys.readouterr().out
    for path, _, meaning in config.describe(presets.preset("mnist5k-lr-strong")):
        assert f"  {path} " in out and meaning
    line = next(line for line in out.splitlines() if line.startswith("  method "))
    assert "'implicit'" in line and "rmd, ift, implicit" in line
    line = next(line for line in out.splitlines() if line.startswith("  method.solver.tol "))
    assert "0.0001" in line and "stop when" in line
    assert "  method.steps " not in out  # the implicit method has no steps


def test_every_field_and_preset_is_explained():
    import dataclasses

    from poison_jax.experiments import sections, sources

    classes = [*sections.METHODS.values(), *sources.SOURCES.values(), config.Attack, config.Sweep]
    for section in classes:
        for field in dataclasses.fields(section):
            assert field.metadata["help"], (section.__name__, field.name)
    assert all(p.summary and "\n" not in p.summary for p in presets.PRESETS.values())


def test_readme_first_screen_mentions_the_example():
    first_screen = (Path(__file__).parent.parent / "README.md").read_text().splitlines()[:60]
    assert any("poison-jax example" in line for line in first_screen)


# -- 6. the cores from Python too ------------------------------------------------------------------


def test_core_count_respects_affinity_and_the_container_quota(monkeypatch, tmp_path):
    quota = tmp_path / "cpu.max"
    quota.write_text("150000 100000\n")
    assert devices._cgroup_cpu_limit(quota) == 2
    quota.write_text("max 100000\n")
    assert devices._cgroup_cpu_limit(quota) is None
    monkeypatch.setattr(devices.os, "sched_getaffinity", lambda pid: {3}, raising=False)
    monkeypatch.setattr(devices, "_cgroup_cpu_limit", lambda: None)
    assert devices.cpu_core_count() == 1
    monkeypatch.setattr(devices.os, "sched_getaffinity", lambda pid: set(range(8)), raising=False)
    monkeypatch.setattr(devices, "_cgroup_cpu_limit", lambda: 2)
    assert devices.cpu_core_count() == 2


def test_use_cpu_cores_splits_the_host_from_python():
    script = (
        "import poison_jax, jax; n = poison_jax.experiments.devices.use_cpu_cores(3); "
        "assert n == 3 and len(jax.devices()) == 3, jax.devices(); "
        "assert poison_jax.experiments.devices.use_cpu_cores(2) == 3  # too late: the backend has started"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def test_use_cpu_cores_refuses_a_bad_count():
    with pytest.raises(ValueError, match="count must be a positive integer"):
        poison_jax.experiments.devices.use_cpu_cores(0)


def test_sweep_start_states_padding_and_suggests_counts(monkeypatch):
    monkeypatch.setattr(sweep_records, "cpu_core_count", lambda: 4)
    line = sweep_records.device_line(presets.preset("digits-lr", {"sweep.num_seeds": 5}), "digits-lr", 2, "cpu")
    assert "5 seed(s) on 2 CPU device(s), padded to 6" in line and "sweep.num_seeds=4 or 6" in line
    assert "4 usable cores but 2 CPU device(s): call poison_jax.experiments.devices.use_cpu_cores()" in line
    assert "padded" not in sweep_records.device_line(
        presets.preset("digits-lr", {"sweep.num_seeds": 4}), "digits-lr", 2, "gpu"
    )
