"""Floor 2: a sanitiser in the config (``--set defence=...``) judges each cell's attack: it cleans
the poisoned training set before the victim fits, and what it removed is recorded per seed."""

import json
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest

from poison_jax.experiments import config, sweep
from poison_jax.experiments.checked import ConfigError
from poison_jax.poisoning import attack, data
from tests.tiny import tiny, tiny_sets

ONE = {"sweep.settings": ("small",), "attack.num_batches": 1}
REMOVED = ("defence_poison_removed", "defence_clean_removed", "defence_recall", "defence_false_positive_rate")


def _run(c, folder):
    return sweep.run_sweep(c, folder, progress=False, log=lambda _: None)


@pytest.mark.parametrize("mode", ["replace", "add"])
def test_poison_rows_mark_the_active_poison_points(mode):
    state = attack.AttackState  # fields used: replace_idx, active
    n_train, splits = 6, data.Splits(jnp.zeros((2, 6, 3)), jnp.zeros((2, 6)), None, None, None, None)
    fields = {f: None for f in state._fields}
    st = state(**{**fields, "replace_idx": jnp.array([[4, 1, 2], [0, 5, 3]]), "active": jnp.array([[1, 1, 0]] * 2) > 0})
    rows = np.asarray(attack.poison_rows(splits, st, attack.MODES[mode]()))
    if mode == "replace":
        assert rows.tolist() == [[i in (1, 4) for i in range(n_train)], [i in (0, 5) for i in range(n_train)]]
    else:
        assert rows.tolist() == [[False] * n_train + [True, True, False]] * 2


# The SGD victim shuffles rows with weights another way than without (add mode always has weights);
# the converged victim has no randomness.
@pytest.mark.parametrize("victim", [{"attack.poison_mode": "add"}, {"victim": "converged"}], ids=["add", "converged"])
def test_nothing_removed_leaves_the_victim_as_without_a_defence(tmp_path, victim):
    plain = config.override(tiny(ONE), victim)
    kept = config.override(plain, {"defence": "sphere", "defence.rule.f": 0.0})
    plain, kept = _run(plain, tmp_path / "plain"), _run(kept, tmp_path / "kept")
    for a, b in zip(plain, kept, strict=True):
        assert a["per_seed"]["error"] == b["per_seed"]["error"]
        assert b["per_seed"]["defence_poison_removed"] == [0, 0] and b["per_seed"]["defence_clean_removed"] == [0, 0]


@pytest.mark.parametrize("statistics", ["oracle", "data-dependent"])
def test_a_sanitiser_records_what_it_removed_per_seed(tmp_path, statistics):
    c = tiny({**ONE, "defence": "knn", "defence.statistics": statistics, "defence.rule.f": 0.2})
    records = _run(c, tmp_path)
    n_train, batch = c.sweep.n_train, c.attack.poison_batch
    for r in records:
        per_seed = r["per_seed"]
        assert all(len(per_seed[k]) == 2 for k in REMOVED)
        poison = batch if r["cell"] == 1 else 0
        removed = np.add(per_seed["defence_poison_removed"], per_seed["defence_clean_removed"])
        assert np.all(removed >= int(0.2 * n_train))  # ceil(0.2 n_c) per class
        np.testing.assert_allclose(
            per_seed["defence_recall"], np.divide(per_seed["defence_poison_removed"], max(poison, 1))
        )
        assert r["mean"]["defence_false_positive_rate"] > 0


def test_the_defence_changes_the_hash_and_no_defence_keeps_it():
    plain = tiny(ONE)
    assert config.override(plain, {"defence": "none"}).hash() == plain.hash()
    hashes = {config.override(plain, {"defence": kind}).hash() for kind in ("sphere", "slab", "knn", "svd")}
    assert len(hashes) == 4 and plain.hash() not in hashes
    oracle = config.override(plain, {"defence": "sphere", "defence.statistics": "oracle"})
    assert oracle.hash() != config.override(plain, {"defence": "sphere"}).hash()


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        ({"defence": "moat"}, "defence"),
        ({"defence": "sphere", "defence.statistics": "psychic"}, "defence.statistics"),
        ({"defence": "sphere", "defence.rule": "median"}, "rule"),
        ({"defence": "sphere", "defence.rule.f": 1.0}, "rule.f"),
        ({"defence": "sphere", "defence.rule": "percentile", "defence.rule.q": 0.0}, "rule.q"),
        ({"defence": "knn", "defence.k": 0}, "defence.k"),
        ({"defence": "svd", "defence.mass": 1.5}, "defence.mass"),
    ],
)
def test_bad_defence_fields_are_named(overrides, named):
    with pytest.raises(ConfigError, match=named.replace(".", r"\.")):
        config.override(tiny(ONE), overrides)


def test_a_defence_is_refused_where_it_does_not_apply():
    with pytest.raises(ConfigError, match="classification only"):
        tiny({"defence": "sphere"}, "diabetes-ridge")
    with pytest.raises(ConfigError, match="the slab is binary"):
        tiny({"defence": "slab"}, "digits10-lr")
    assert tiny({"defence": "sphere"}, "digits10-lr").defence.kind == "sphere"


@pytest.mark.slow
def test_the_cli_runs_a_defence_and_writes_it_in_the_results(tmp_path):
    sets = tiny_sets({**ONE, "defence": "sphere", "defence.statistics": "oracle", "defence.rule": "percentile"})
    run = [sys.executable, "-m", "poison_jax.face.cli", "run", "--preset", "digits-lr", *sets, "--out", str(tmp_path)]
    done = subprocess.run([*run, "--no-progress"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    table = done.stdout[done.stdout.index("The defence, mean over seeds:") :].splitlines()
    assert table[2].startswith("| poison (%) | log λ = -8: poison removed (%) | clean removed (%) |")
    assert table[4].startswith("| 0.0 | – |") and table[5].startswith("| 3.5 | ")  # no poison in cell 0
    records = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert len(records) == 2 and all(set(REMOVED) <= set(r["per_seed"]) for r in records)
    saved = json.loads((tmp_path / "config.json").read_text())["config"]["defence"]
    assert saved == {"kind": "sphere", "statistics": "oracle", "rule": {"kind": "percentile", "q": 90.0}}
