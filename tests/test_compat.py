"""Results folders written by 0.1.0 resume under this version: their config hash is pinned."""

import json
import shutil
from pathlib import Path

import pytest

from poison_jax.experiments import presets, sweep

FIXTURES = Path(__file__).parent / "fixtures"
HASHES = json.loads((FIXTURES / "preset_hashes_v0.1.0.json").read_text())
VARIANTS = {
    "digits-lr+implicit": ("digits-lr", {"method": "implicit", "method.solver": "lbfgs"}),
    "digits-lr+svm-add": ("digits-lr", {"loss": "smoothed-hinge", "attack.poison_mode": "add", "victim": "converged"}),
}


def _fixture_config():
    return presets.preset(
        "digits-lr",
        {
            "sweep.num_seeds": 2, "attack.num_batches": 1, "attack.poison_batch": 4, "sweep.n_train": 40,
            "sweep.n_val": 20, "attack.iters_fixed": 2, "attack.iters_clean": 2, "attack.iters_multi": 2,
            "method.steps": 10, "victim.epochs": 2, "sweep.cv_folds": 2, "sweep.cv_log_lam_grid": (-4.0, 0.0, 3),
            "sweep.settings": ("small", "learned"),
        },
    )  # fmt: skip


@pytest.mark.parametrize("name", sorted(HASHES))
def test_config_hashes_of_0_1_0_are_unchanged(name):
    preset, overrides = VARIANTS.get(name, (name, {}))
    assert presets.preset(preset, overrides).hash() == HASHES[name]


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
