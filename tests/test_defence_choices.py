"""Floor 2: the model-based defences (loss, TRIM, SEVER, label sanitisation) and the relaxed attacker
(``attack.adaptive=relax``) as config choices: each builds its value, is refused where it does not
apply (naming what does), and runs in a sweep that records what the defence did per seed."""

import numpy as np
import pytest

from poison_jax.experiments import config, sweep
from poison_jax.experiments.checked import ConfigError
from poison_jax.experiments.overrides import parse_overrides
from poison_jax.face import plots
from poison_jax.poisoning import defences, model_defences, relaxed
from tests.tiny import tiny

ONE = {"sweep.settings": ("small",), "attack.num_batches": 1}
CONVERGED = {"victim": "converged", "victim.solver.tol": 1e-4}


def _converged(overrides, name="digits-lr"):
    """The tiny sweep with a converged victim (the defender's fits are then deterministic)."""
    return config.override(tiny(name=name), {**CONVERGED, **overrides})


def _run(c, folder):
    return sweep.run_sweep(c, folder, progress=False, log=lambda _: None)


@pytest.mark.parametrize(
    ("overrides", "built"),
    [
        ({"defence": "loss", "defence.statistics": "oracle"}, model_defences.LossSanitiser),
        ({"defence": "trim", "defence.f": 0.2, "defence.iters": 3}, model_defences.Trim),
        ({"defence": "sever", "defence.rounds": 2}, model_defences.Sever),
        ({"defence": "label", "defence.k": 4, "defence.eta": 0.75}, model_defences.LabelSanitiser),
    ],
)
def test_each_model_defence_builds_its_value_with_the_fields_given(overrides, built):
    c = config.override(tiny(ONE), overrides)
    value = c.defence.build()
    assert isinstance(value, built)
    for path, given in overrides.items():
        field = path.split(".")[-1]
        if path.count(".") == 1 and hasattr(value, field):
            assert getattr(value, field) == given
    assert c.hash() != tiny(ONE).hash()


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        ({"defence": "trim", "defence.f": 1.0}, "defence.f"),
        ({"defence": "sever", "defence.rounds": 0}, "defence.rounds"),
        ({"defence": "label", "defence.eta": 0.0}, "defence.eta"),
        ({"defence": "sphere", "attack.adaptive": "relax", "attack.adaptive.temperature": 0.0}, "temperature"),
    ],
)
def test_bad_fields_are_named(overrides, named):
    with pytest.raises(ConfigError, match=named.replace(".", r"\.")):
        config.override(tiny(ONE), overrides)


def test_defences_are_refused_where_they_do_not_apply_naming_what_does():
    for kind in ("trim", "sever", "loss"):  # they fit the model: a regression is their home
        assert tiny({"defence": kind}, "diabetes-ridge").defence.kind == kind
    with pytest.raises(ConfigError, match="none, loss, trim or sever with loss squared"):
        tiny({"defence": "label"}, "diabetes-ridge")
    for defence in ("none", "svd", "loss"):
        with pytest.raises(ConfigError, match=f"defence={defence} \\(relax needs defence sphere or slab or knn\\)"):
            tiny({"defence": defence, "attack.adaptive": "relax"})


def test_the_relaxed_attacker_sees_the_configs_sanitiser():
    c = tiny({"defence": "slab", "defence.statistics": "oracle", "attack.adaptive": "relax"})
    settings = c.attack_settings(c.model.build(64))
    assert isinstance(settings.relaxed, relaxed.Relaxed) and settings.feasible is None
    assert settings.relaxed.sanitiser == c.defence.build() and settings.relaxed.temperature == 0.1
    assert tiny({"defence": "slab"}).attack_settings(c.model.build(64)).relaxed is None


def test_trim_on_a_ridge_sweep_removes_its_share_and_records_it(tmp_path):
    c = _converged({**ONE, "defence": "trim", "defence.f": 0.2}, "diabetes-ridge")
    records = _run(c, tmp_path)
    for r in records:
        per_seed = r["per_seed"]
        removed = np.add(per_seed["defence_poison_removed"], per_seed["defence_clean_removed"])
        assert np.all(removed == int(np.ceil(0.2 * c.sweep.n_train)))
        assert np.all(np.isfinite(per_seed["error"]))
    assert np.mean(records[1]["per_seed"]["defence_recall"]) > 0  # label-flipped targets have large residuals


def test_label_sanitisation_relabels_instead_of_removing(tmp_path):
    records = _run(_converged({**ONE, "defence": "label"}), tmp_path)
    poisoned = records[1]["per_seed"]
    assert poisoned["defence_poison_removed"] == [0, 0] and poisoned["defence_clean_removed"] == [0, 0]
    # digits 0 v 8 are well separated: the poison points, labelled wrongly in the other class's
    # region at the start, are outvoted by their neighbours
    assert min(poisoned["defence_poison_relabelled"]) > 0
    assert max(poisoned["defence_clean_relabelled"]) < 0.1 * tiny(ONE).sweep.n_train
    table = plots.summary_table(records)
    assert "log λ = -8: poison removed (%) | clean removed (%) | poison relabelled | clean relabelled |" in table


def test_a_relaxed_attack_sweep_runs_and_differs_from_the_plain_attack(tmp_path):
    sanitiser = {**ONE, "defence": "sphere", "defence.statistics": "data-dependent"}
    plain = _run(_converged(sanitiser), tmp_path / "plain")
    relaxing = _run(_converged({**sanitiser, "attack.adaptive": "relax"}), tmp_path / "relax")
    assert np.all(np.isfinite(relaxing[1]["per_seed"]["error"]))
    assert relaxing[1]["per_seed"]["val_loss"] != plain[1]["per_seed"]["val_loss"]


def test_every_defence_follows_the_sanitise_protocol():
    assert all(hasattr(kind, "sanitise") for kind in (defences.Sanitiser, *model_defences.MODEL_DEFENCES.values()))


def test_none_on_the_command_line_chooses_the_kind_none():
    # --set reads `none` as Python's None: for a choice with a kind "none" it means that kind
    relaxing = tiny({"defence": "sphere", "attack.adaptive": "relax"})
    plain = config.override(relaxing, parse_overrides(["attack.adaptive=none", "defence=none"]))
    assert plain.attack.adaptive.kind == "none" and plain.defence.kind == "none"
    assert plain.hash() == tiny().hash()
    with pytest.raises(ConfigError, match="method must be one of"):
        config.override(plain, parse_overrides(["method=none"]))  # a choice without "none" is still refused
