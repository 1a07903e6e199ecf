"""Results folders written by 0.1.0 resume under this version: their config hash is pinned."""

import json
import shutil
from pathlib import Path

import pytest

from poison_jax.experiments import presets, sweep

FIXTURES = Path(__file__).parent / "fixtures"
HASHES = json.loads((FIXTURES / "preset_hashes_v0.1.0.json").read_text())
VARIANTS = {
    "digits-lr+implicit": ("digits-lr", dict(hypergrad="implicit", solver="lbfgs")),
    "digits-lr+svm-add": ("digits-lr", dict(loss="smoothed-hinge", poison_mode="add", victim="converged")),
}


def _fixture_config():
    return presets.preset(
        "digits-lr", num_seeds=2, num_batches=1, poison_batch=4, n_train=40, n_val=20, iters_fixed=2,
        iters_clean=2, iters_multi=2, inner_steps=10, eval_epochs=2, cv_folds=2,
        cv_log_lam_grid=(-4.0, 0.0, 3), settings=("small", "learned"),
    )  # fmt: skip


@pytest.mark.parametrize("name", sorted(HASHES))
def test_config_hashes_of_0_1_0_are_unchanged(name):
    preset, overrides = VARIANTS.get(name, (name, {}))
    assert presets.preset(preset, **overrides).hash() == HASHES[name]


def test_a_results_folder_written_by_0_1_0_resumes(tmp_path):
    out = tmp_path / "results"
    shutil.copytree(FIXTURES / "results_v0.1.0", out)
    before = (out / "results.jsonl").read_text().splitlines()
    assert json.loads((out / "config.json").read_text())["hash"] == _fixture_config().hash()
    # Drop the last cell: resuming recomputes it and keeps the three finished ones as written.
    (out / "results.jsonl").write_text("\n".join(before[:-1]) + "\n")
    lines = []
    records = sweep.run_sweep(_fixture_config(), out, resume=True, progress=False, log=lines.append)
    after = (out / "results.jsonl").read_text().splitlines()
    assert after[:3] == before[:3] and len(after) == 4 and len(records) == 4
    last_old, last_new = json.loads(before[-1]), json.loads(after[-1])
    assert (last_new["setting"], last_new["cell"]) == (last_old["setting"], last_old["cell"])
    assert last_new["config_hash"] == last_old["config_hash"]
