"""Reading a results folder's ``results.jsonl`` (private: the public path is
:func:`poison_jax.experiments.store.read_records`, the one reader of the store and the face)."""

from __future__ import annotations

import json
from pathlib import Path


def read_records(path, *, config_hash: str | None = None) -> list[dict]:
    """The records of a results folder's finished cells (``path``: the folder or its ``results.jsonl``),
    in the order they were written.

    Reads only (no lock): safe on a folder another run is writing, and on one written by 0.1.0.
    With ``config_hash``, every record must have been filed under that hash (a store's own check).

    Raises:
      FileNotFoundError: no results file at ``path``.
      ValueError: a line that is not a record (not valid JSON, no setting or cell, another
        ``config_hash``), naming the file and the line.
    """
    path = Path(path)
    results = path / "results.jsonl" if path.is_dir() else path
    if not results.exists():
        raise FileNotFoundError(f"no results file at {str(results)!r}: give a results.jsonl or the folder holding it")
    hint = "; move the file away or choose another --out" if config_hash is not None else ""
    records = []
    for number, line in enumerate(results.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            if config_hash is not None and record["config_hash"] != config_hash:
                raise ValueError(f"config_hash {record['config_hash']} is not this config's {config_hash}")
            record["setting"], record["cell"]
        except json.JSONDecodeError as err:
            raise ValueError(f"{results}, line {number}, is damaged: it is not valid JSON ({err}){hint}") from None
        except (ValueError, KeyError, TypeError) as err:
            raise ValueError(f"{results}, line {number}, is damaged or from another config ({err}){hint}") from err
        records.append(record)
    return records
