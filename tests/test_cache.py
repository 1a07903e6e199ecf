"""The persistent compilation cache of the CLI and run_sweep: a second identical run in a fresh
process loads its programs instead of compiling them; the location is said once; it can be off."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from poison_jax.experiments import cache
from tests.tiny import tiny_sets

SETS = tiny_sets({"sweep.settings": ("small", "learned"), "attack.num_batches": 1})


def _run(tmp_path, out, *options, env_extra=None, default_compiler=False):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_COMPILATION_CACHE", "JAX_PERSISTENT"))}
    if default_compiler:  # the cache's saving is measured against XLA's default compiler, not the tests' (conftest.py)
        env.pop("XLA_FLAGS", None)
    env.update({"XDG_CACHE_HOME": str(tmp_path / "xdg"), **(env_extra or {})})
    script = Path(sys.executable).parent / "poison-jax"
    command = [str(script), "run", "--preset", "digits-lr", *SETS, "--out", str(out), "--no-progress", *options]
    done = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=600)
    assert done.returncode == 0, done.stderr
    compiling = sum(json.loads(line)["compile_time_s"] for line in (out / "results.jsonl").read_text().splitlines())
    return done.stdout, compiling


@pytest.mark.slow
def test_a_second_run_in_a_fresh_process_loads_its_programs(tmp_path):
    folder = tmp_path / "jax-cache"
    first, first_compiling = _run(tmp_path, tmp_path / "a", "--cache-dir", str(folder), default_compiler=True)
    assert first.count(f"JAX compilation cache: {folder}") == 1
    entries = list(folder.iterdir())
    assert entries  # the sweep's programs hold no host callback: JAX caches them
    second, second_compiling = _run(tmp_path, tmp_path / "b", "--cache-dir", str(folder), default_compiler=True)
    assert second_compiling < 0.7 * first_compiling, (first_compiling, second_compiling)
    a, b = ((tmp_path / d / "results.jsonl").read_text().splitlines() for d in ("a", "b"))
    assert [json.loads(x)["per_seed"] for x in a] == [json.loads(x)["per_seed"] for x in b]


@pytest.mark.slow
def test_the_default_folder_and_the_off_switches(tmp_path):
    default = tmp_path / "xdg" / "poison_jax" / "jax"
    said, _ = _run(tmp_path, tmp_path / "a")
    assert f"JAX compilation cache: {default}" in said and any(default.iterdir())
    off, _ = _run(tmp_path, tmp_path / "off", "--no-cache")
    assert "JAX compilation cache" not in off


def test_the_environment_turns_it_off(tmp_path, monkeypatch):
    monkeypatch.setenv("POISON_JAX_NO_CACHE", "1")
    said = []
    assert cache.use_compilation_cache(tmp_path / "unused", log=said.append) is None
    assert said == [] and not (tmp_path / "unused").exists()


def test_the_folder_comes_from_the_environment_and_a_bad_one_is_named(tmp_path, monkeypatch):
    monkeypatch.setenv("POISON_JAX_CACHE_DIR", str(tmp_path / "mine"))
    assert cache.default_cache_dir() == tmp_path / "mine"
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(ValueError, match="compilation cache folder .*a-file/sub' cannot be created"):
        cache.use_compilation_cache(blocker / "sub", log=lambda line: None)
