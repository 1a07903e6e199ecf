"""Reading a sweep's records for the figures and the reports of :mod:`poison_jax.face.plots` (the one
public path of :func:`label_source`)."""

from __future__ import annotations

import numpy as np


def label_source(records, index: int, name: str) -> list[dict]:
    """Copies of one results folder's records, ready to be drawn with other folders' in one figure.

    Each copy's label gains `` — name`` (e.g. ``"λ learned — rmd (results/a)"``) and the copies carry
    the folder's ``index``: the figures draw one curve per (folder, Λ setting), the first folder
    as usual and the others dashed with open markers, so records of different folders are never
    merged. Diagnostics of folder ``index`` are keyed ``(index, setting, cell)`` for
    :func:`objective_figure`.
    """
    return [
        {**r, "_source": index, "_base_label": r.get("_base_label", r["label"]), "label": f"{r['label']} — {name}"}
        for r in records
    ]


def source_of(record) -> int:
    return record.get("_source", 0)


def is_regression(records) -> bool:
    """Whether the records measure a regression (test MSE, as is) rather than a test error (in %)."""
    return any(r.get("metric") == "test_mse" for r in records)


def by_setting(records):
    """Records per curve, ``(folder index, setting)``, in first-seen order, each sorted by cell."""
    out = {}
    for r in records:
        out.setdefault((source_of(r), r["setting"]), []).append(r)
    return {key: sorted(rs, key=lambda r: r["cell"]) for key, rs in out.items()}


def seed_values(record, metric):
    values = [v for v in record["per_seed"][metric] if v is not None]
    return np.asarray(values, np.float64)


def diagnostics_of(diagnostics: dict, record) -> dict | None:
    """A record's diagnostics: keyed ``(setting, cell)`` (one folder, as ``store.read_diagnostics``
    gives them) or ``(folder index, setting, cell)`` (records from :func:`label_source`)."""
    key = (record["setting"], record["cell"])
    found = diagnostics.get((source_of(record), *key))
    if found is None and "_source" not in record:
        found = diagnostics.get(key)
    return found
