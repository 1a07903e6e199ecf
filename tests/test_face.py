"""Floor 3: the command and the benchmark scripts run (small settings)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

import poison_jax
from poison_jax import cli


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


def test_hypergrad_benchmark_quick(tmp_path):
    from benchmarks import hypergrad

    result = hypergrad.main(["--quick", "--out", str(tmp_path)])
    saved = json.loads((tmp_path / "hypergrad.json").read_text())
    assert saved["rows"] == json.loads(json.dumps(result["rows"]))
    methods = {row["method"] for row in saved["rows"]}
    assert {"forward unroll", "RMD", "IFT solve (given w*)"} <= methods
    assert all(row["median_ms"] > 0 for row in saved["rows"])
    assert saved["goals"]["RMD / forward unroll <= 2.5"] > 1.0  # a reverse pass costs something
    assert saved["device"].startswith("cpu") and saved["jax_version"]
    assert (tmp_path / "hypergrad.md").read_text().startswith("| method |")


def test_attack_step_benchmark_quick(tmp_path):
    from benchmarks import attack_step

    attack_step.main(["--quick", "--out", str(tmp_path)])
    saved = json.loads((tmp_path / "attack_step.json").read_text())
    loop = saved["lr_vmap_vs_loop"]
    assert loop["vmap_ms"] > 0 and loop["loop_ms"] > 0
    mlp = saved["mlp_checkpointing"]
    # Checkpointing must shrink the buffers XLA plans for the reverse pass.
    assert mlp["checkpointed"]["xla_temp_mb"] < mlp["plain"]["xla_temp_mb"]
    assert "ratio vmap / loop" in (tmp_path / "attack_step.md").read_text()
