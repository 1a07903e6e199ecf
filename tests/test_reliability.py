"""Reliability: nothing lost on a crash, one writer per folder, determinism, divergence reported."""

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from poison_jax.experiments import sweep
from tests.tiny import tiny, tiny_sets

pytestmark = pytest.mark.slow  # end to end: deselect with -m "not slow" for a fast loop

# The tiny sweep, with cells long enough to be killed in the middle of the sweep.
SETS = tiny_sets(
    {
        "attack.iters_fixed": 6,
        "attack.iters_clean": 4,
        "attack.iters_multi": 6,
        "victim.epochs": 5,
        "method.steps": 40,
        "sweep.settings": ("small", "learned"),
    }
)


def _command(out, *extra):
    script = Path(sys.executable).parent / "poison-jax"
    return [str(script), "run", "--preset", "digits-lr", *SETS, "--out", str(out), "--no-progress", *extra]


def _records(out):
    return [json.loads(line) for line in (Path(out) / "results.jsonl").read_text().splitlines()]


def _without_timing(records):
    return [{k: v for k, v in r.items() if k not in ("wall_time_s", "compile_time_s")} for r in records]


@pytest.fixture(scope="module")
def uninterrupted_folder(tmp_path_factory):
    out = tmp_path_factory.mktemp("uninterrupted")
    done = subprocess.run(_command(out), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    return out


@pytest.fixture(scope="module")
def uninterrupted(uninterrupted_folder):
    return _records(uninterrupted_folder)


def test_sigkill_then_resume_equals_an_uninterrupted_run(uninterrupted, tmp_path):
    """Kill the sweep with SIGKILL at a random moment, resume, compare cell for cell.

    The moment: a random number of finished cells (at least one, and at least two still to run),
    then up to 50 ms. (A delay of up to 3 s after the first cell let the sweep finish first once its
    programs came from the compilation cache: cells then take 0.01 to 0.7 s.)

    Every field but the wall time (a measurement of this run) must be equal, values included. The
    three processes involved (uninterrupted, killed, resuming) also show that one config and seed
    give bitwise-identical results across processes.
    """
    rng = random.Random(os.getpid())
    finished = rng.randint(1, len(uninterrupted) - 2)
    out = tmp_path / "killed"
    victim = subprocess.Popen(_command(out), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    results = out / "results.jsonl"
    deadline = time.time() + 300
    while not (results.exists() and results.read_text().count("\n") >= finished):
        assert victim.poll() is None, "the sweep ended before it could be killed"
        assert time.time() < deadline
        time.sleep(0.005)
    time.sleep(rng.uniform(0.0, 0.05))
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    lines = results.read_text().splitlines()
    assert all(json.loads(line) for line in lines)  # no half-written line
    assert len(lines) < len(uninterrupted), "killed too late to test anything: the sweep had finished"

    resumed = subprocess.run(_command(out, "--resume"), capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    assert _without_timing(_records(out)) == _without_timing(uninterrupted)
    assert not list(out.rglob(".*.tmp"))


def test_second_run_on_the_same_folder_is_refused(uninterrupted_folder, uninterrupted, tmp_path):
    out = tmp_path / "busy"
    # The holder runs for as long as the test needs (killed below): a tiny sweep could end, and let go
    # of the lock, before the second process has started.
    holder = _command(out, "--set", "attack.iters_fixed=1000000")
    first = subprocess.Popen(holder, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while not ((out / ".lock").exists() and (out / ".lock").read_text().strip()):
            assert first.poll() is None and time.time() < deadline
            time.sleep(0.05)
        second = subprocess.run(_command(out, "--resume"), capture_output=True, text=True, timeout=120)
        assert second.returncode == 2
        assert f"another poison-jax run (pid {first.pid}) is writing to" in second.stderr
    finally:
        first.kill()
        first.wait()
    # The killed holder's lock died with it: a resume goes through. So that it has one cell to run
    # rather than the whole sweep, the finished cells of the uninterrupted run but its last are put
    # in the folder (the killed holder's .lock stays as it left it).
    held_by = (out / ".lock").read_text()
    shutil.copytree(uninterrupted_folder, out, dirs_exist_ok=True, ignore=shutil.ignore_patterns(".lock"))
    lines = (out / "results.jsonl").read_text().splitlines()
    (out / "results.jsonl").write_text("\n".join(lines[:-1]) + "\n")
    last = json.loads(lines[-1])
    for folder in ("state", "diagnostics"):
        (out / folder / f"{last['setting']}-{last['cell']}.npz").unlink(missing_ok=True)
    assert (out / ".lock").read_text() == held_by == str(first.pid)
    again = subprocess.run(_command(out, "--resume"), capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    assert _without_timing(_records(out)) == _without_timing(uninterrupted)


def test_divergence_is_reported_per_cell_and_seed_never_as_nan(tmp_path):
    config = tiny(
        {
            "attack.num_batches": 1,
            "method.lr": 1e4,
            "attack.log_lam_box": (-8.0, 12.0),
            "sweep.log_lam_large": 12.0,
            "sweep.settings": ("small", "large"),
        }
    )
    records = sweep.run_sweep(config, tmp_path, progress=False, log=lambda _: None)
    text = (tmp_path / "results.jsonl").read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert len(records) == 4  # the sweep went on through every cell
    diverged = [r for r in records if r["setting"] == "large"]  # exp(12) x 1e4: every inner step explodes
    assert "validation loss after inner training is not finite" in diverged[0]["failures"][0]["reason"]
    for r in diverged[1:]:
        assert [f["seed"] for f in r["failures"]] == [0, 1]
        assert (
            "non-finite hypergradient" in r["failures"][0]["reason"]
            and "method.lr=10000.0" in r["failures"][0]["reason"]
        )
        assert r["per_seed"]["error"] == [None, None] and r["mean"]["error"] is None


def test_victim_divergence_is_reported(tmp_path):
    config = tiny(
        {
            "attack.num_batches": 0,
            "victim.lr": 1e12,
            "sweep.log_lam_large": 15.0,
            "attack.log_lam_box": (-8.0, 16.0),
            "sweep.settings": ("large",),
        }
    )
    (record,) = sweep.run_sweep(config, tmp_path, progress=False, log=lambda _: None)
    assert (
        record["failures"]
        and "victim training diverged (lower victim.lr=1000000000000.0)" in record["failures"][0]["reason"]
    )
    assert "NaN" not in (tmp_path / "results.jsonl").read_text()


def _free_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_as_two_hosts_equal_one_process(uninterrupted, tmp_path):
    """Two local processes joined by jax.distributed (one CPU device each, seeds sharded across
    them) give the results of one process; only process 0 writes.

    The λ-learned setting only: its cells move both Xp and λ (the fixed-λ setting moves Xp alone),
    and each process compiles the attack for two modes of three (learning λ on clean data, then both)."""
    out = tmp_path / "two_hosts"
    hosts = ["--set", "sweep.settings=learned", "--devices", "1", "--coordinator", f"127.0.0.1:{_free_port()}"]
    hosts += ["--num-processes", "2"]
    procs = [
        subprocess.Popen(
            _command(out, *hosts, "--process-id", str(i)), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for i in range(2)
    ]
    outputs = [p.communicate(timeout=600) for p in procs]
    for p, (_, err) in zip(procs, outputs, strict=False):
        assert p.returncode == 0, err[-2000:]
    assert "| poison (%) |" in outputs[0][0] and "| poison (%) |" not in outputs[1][0]
    got, want = _records(out), [r for r in uninterrupted if r["setting"] == "learned"]
    assert [(r["setting"], r["cell"]) for r in got] == [(r["setting"], r["cell"]) for r in want] and want
    for g, w in zip(got, want, strict=False):
        for metric in ("error", "log_lam", "sq_norm", "val_loss"):
            assert np.allclose(
                np.asarray(g["per_seed"][metric], float), np.asarray(w["per_seed"][metric], float), rtol=1e-5, atol=1e-6
            ), metric
