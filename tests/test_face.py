"""Floor 3: the command runs (small settings); the benchmark scripts are tests/test_benchmarks.py's."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import poison_jax
from poison_jax.face import cli
from tests.tiny import tiny_sets


def test_version_and_help(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--version"])
    assert exit_info.value.code == 0
    assert poison_jax.__version__ in capsys.readouterr().out
    assert cli.main([]) == 0
    assert "example" in capsys.readouterr().out


def test_example_prints_agreeing_hypergradients(capsys):
    assert cli.main(["example", "--steps", "400"]) == 0
    out = capsys.readouterr().out
    lam_grads = [float(line.split()[-1]) for line in out.splitlines() if "d loss / d log-λ" in line]
    assert len(lam_grads) == 2 and abs(lam_grads[0] - lam_grads[1]) < 1e-4 * abs(lam_grads[1])


def test_console_script_is_installed():
    script = Path(sys.executable).parent / "poison-jax"
    out = subprocess.run([str(script), "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.startswith("poison-jax")


def _poison_jax(*args, cwd):
    script = Path(sys.executable).parent / "poison-jax"
    return subprocess.run([str(script), *args], capture_output=True, text=True, cwd=cwd, timeout=600)


@pytest.mark.slow
def test_cli_run_resume_plot_end_to_end(tmp_path):
    out = tmp_path / "run"
    first = _poison_jax("run", "--preset", "digits-lr", *tiny_sets(), "--out", str(out), "--no-progress", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert len(records) == 4 * 3  # every Λ setting at fractions 0 and two batches
    assert "| poison (%) |" in first.stdout and "figures:" in first.stdout
    assert (out / "figures" / "error_vs_fraction.png").stat().st_size > 10_000
    assert (out / "figures" / "lambda_norm_vs_fraction.pdf").exists()

    before = (out / "results.jsonl").read_bytes()
    again = _poison_jax("run", "--preset", "digits-lr", *tiny_sets(), "--out", str(out), "--resume", cwd=tmp_path)
    assert again.returncode == 0 and "already finished: nothing to do" in again.stdout
    assert (out / "results.jsonl").read_bytes() == before

    plotted = _poison_jax("plot", str(out / "results.jsonl"), "--out", str(tmp_path / "plots"), cwd=tmp_path)
    assert plotted.returncode == 0, plotted.stderr
    assert (tmp_path / "plots" / "figures" / "error_vs_fraction.png").exists()


@pytest.mark.slow
def test_cli_sharded_seeds_equal_one_device(tmp_path):
    """Three seeds on four CPU devices (padded to four, padding dropped) give the one-device results."""
    runs = {}
    for devices in ("1", "4"):
        out = tmp_path / devices
        done = _poison_jax(
            "run",
            "--preset",
            "digits-lr",
            *tiny_sets({"sweep.num_seeds": 3, "sweep.settings": "learned"}),
            "--devices",
            devices,
            "--out",
            str(out),
            "--no-progress",
            cwd=tmp_path,
        )
        assert done.returncode == 0, done.stderr
        runs[devices] = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    for one, four in zip(runs["1"], runs["4"], strict=False):
        assert len(four["per_seed"]["error"]) == 3
        for metric in ("error", "log_lam", "sq_norm", "val_loss"):
            assert np.allclose(
                np.asarray(one["per_seed"][metric], float),
                np.asarray(four["per_seed"][metric], float),
                rtol=1e-5,
                atol=1e-6,
            ), metric


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["run", "--preset", "digits-lr", "--set", "attack.alpha=-1"],
            "attack.alpha must be a finite number > 0, got -1",
        ),
        (
            ["run", "--preset", "digits-lr", "--set", "colour=red"],
            "config path 'colour': the config has no field 'colour'",
        ),
        (["run", "--preset", "digits-lr", "--set", "alpha=-1"], "config path 'alpha': the config has no field 'alpha'"),
        (["plot", "nowhere/results.jsonl"], "no results file at 'nowhere/results.jsonl'"),
    ],
)
def test_cli_errors_are_one_clear_line(tmp_path, args, message):
    done = (
        _poison_jax(*args, "--out", str(tmp_path / "o"), cwd=tmp_path)
        if args[0] == "run"
        else _poison_jax(*args, cwd=tmp_path)
    )
    assert done.returncode == 2
    assert message in done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize(
    "lines, message",
    [
        ('{"setting": "a", "cell": 0}\n\n{"setting": "a', "results.jsonl, line 3, is damaged: it is not valid JSON"),
        ('{"setting": "small"}\n', "results.jsonl, line 1, is damaged or from another config ('cell')"),
    ],
)
def test_cli_plot_names_the_damaged_line(tmp_path, lines, message):
    """plot reads a folder with the store's reader: a damaged line is named by its number (blank lines count)."""
    (tmp_path / "results.jsonl").write_text(lines)
    done = _poison_jax("plot", str(tmp_path), cwd=tmp_path)
    assert done.returncode == 2
    assert message in done.stderr and "Traceback" not in done.stderr


def test_cli_help_explains_every_option():
    for command in ("demo", "run", "plot", "synthetic"):
        done = _poison_jax(command, "--help", cwd=".")
        assert done.returncode == 0
        for option in {
            "demo": ["--seeds", "--out", "--resume", "--hypergrad"],
            "run": ["--preset", "--set", "--out", "--resume", "--hypergrad", "--devices"],
            "plot": ["results", "--out"],
            "synthetic": ["--grid", "--out"],
        }[command]:
            assert option in done.stdout


@pytest.mark.slow
def test_cli_synthetic(tmp_path):
    done = _poison_jax("synthetic", "--grid", "5", "--out", str(tmp_path), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "synthetic_maps.png").stat().st_size > 10_000
    maps = json.loads((tmp_path / "synthetic_maps.json").read_text())
    assert np.asarray(maps["val_error_reg"]).shape == (5, 5)
