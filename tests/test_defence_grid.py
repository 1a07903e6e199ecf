"""benchmarks.defence_grid: every row is a config the CLI accepts, records are summarised per
setting and cell, and the table and the figure show what they hold."""

import numpy as np
import pytest

from benchmarks import defence_grid
from poison_jax.experiments import presets


@pytest.mark.parametrize("grid", sorted(defence_grid.GRIDS))
def test_every_row_of_every_grid_is_a_valid_config(grid):
    for _, preset, overrides, rows in defence_grid.GRIDS[grid]:
        for row in rows.values():
            config = presets.preset(preset, {**defence_grid.SEEDS, **overrides, **row})
            assert config.sweep.num_seeds == 6


def _record(setting, cell, fraction, errors, recall=None):
    per_seed = {"error": errors, "log_lam": [[-8.0]] * len(errors)}
    if recall is not None:
        per_seed |= {"defence_recall": recall, "defence_false_positive_rate": [0.1] * len(errors)}
    return {"setting": setting, "cell": cell, "fraction": fraction, "per_seed": per_seed}


def test_records_are_summarised_in_cell_order_and_written_as_tables_and_a_figure(tmp_path):
    records = [
        _record(setting, cell, cell * 0.05, [0.1 * (cell + 1), 0.3 * (cell + 1)], [0.0, 0.5])
        for setting in ("small", "learned")
        for cell in (1, 0)
    ]
    row = defence_grid.summarise(records)
    assert row["small"]["fractions"] == [0.0, 0.05]
    np.testing.assert_allclose(row["small"]["error"], [0.2, 0.4])
    np.testing.assert_allclose(row["small"]["error_std"], [0.1, 0.2])
    np.testing.assert_allclose(row["learned"]["recall"], [0.25, 0.25])
    plain = defence_grid.summarise([_record("small", 0, 0.0, [0.1]), _record("learned", 0, 0.0, [0.1])])
    assert np.isnan(plain["small"]["recall"][0])
    result = {"panels": [{"label": "digits, logistic", "rows": {"no defence": row, "sphere, oracle": row}}]}
    table = defence_grid.markdown(result)
    assert "| sphere, oracle | 20.0 ± 10.0 | 40.0 ± 20.0 [25] |" in table
    relabelling = [_record("small", c, c * 0.05, [0.1, 0.1], [0.0, 0.0]) for c in (0, 1)]
    for r in relabelling:
        r["per_seed"]["defence_poison_relabelled"] = [3, 4]
    label = defence_grid.summarise([*relabelling, *(r | {"setting": "learned"} for r in relabelling)])
    label_table = defence_grid.markdown({"panels": [{"label": "digits", "rows": {"label": label}}]})
    assert "| label | 10.0 ± 0.0 | 10.0 ± 0.0 [0; 3.5 relabelled] |" in label_table
    defence_grid.plot(result, tmp_path / "grid.png")
    assert (tmp_path / "grid.png").stat().st_size > 10_000
