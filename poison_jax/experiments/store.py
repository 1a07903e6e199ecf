"""The results store of a sweep: one JSON line per finished cell, the attack state after each cell,
written atomically, and a lock so that two runs never write to one folder at once.

Layout of an output folder::

    config.json        the config the results belong to (with its hash)
    results.jsonl      one line per finished cell
    state/SETTING-CELL.npz   the attack state after that cell (to resume the next one)
    diagnostics/SETTING-CELL.npz   what each hyperiteration of that cell saw, per seed (see
                       :data:`DIAGNOSTICS`; folders written before diagnostics existed have none)
    .lock              held (flock) while a run writes here

Every write goes to a temporary file in the same folder, is flushed to disk, then renamed over the
target: a crash leaves either the old or the new file, never half of one.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import tempfile
import zipfile
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from poison_jax.experiments import legacy
from poison_jax.experiments._results import read_records
from poison_jax.poisoning import attack

__all__ = [
    "DIAGNOSTICS",
    "ResultsStore",
    "atomic_write_text",
    "config_hash",
    "load_attack_state",
    "read_diagnostics",
    "read_records",
    "save_attack_state",
]

#: The arrays of a cell's diagnostics file, ``diagnostics/SETTING-CELL.npz`` (``T`` = the cell's
#: hyperiterations: 0 for cell 0 of a fixed-λ setting, T_λ for cell 0 of ``learned``).
DIAGNOSTICS = {
    "seeds": "(num_seeds,) the split seeds, in the order of the rows below",
    "objective": "(num_seeds, T) the attacker's objective (validation loss) at the start of each hyperiteration",
    "inner_grad_norm": "(num_seeds, T) ||grad_w inner loss|| after the inner training/solve of each hyperiteration",
    "inner_steps": "(num_seeds, T) the inner solver's iterations (fixed-step training: its steps)",
    "adjoint_steps": "(num_seeds, T) the adjoint CG's iterations (IFT and implicit only)",
    "adjoint_residual": "(num_seeds, T) the adjoint solve's relative residual (IFT and implicit only; "
    "cg_residual in folders written by 0.1.0)",
    "inner_converged": "(num_seeds, T) whether the inner solves reached their tolerance (fixed steps: finite)",
    "finite": "(num_seeds, T) whether the hyperiteration's hypergradients were finite",
    "inner_grad_norm_init": "(num_seeds,) ||grad_w inner loss|| at the model's initial w(0), with the cell's final "
    "poison points and log λ: the scale to compare inner_grad_norm with",
}


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _atomic_write(path: Path, write) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600 files; results are ordinary files
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """Replace ``path`` by ``text`` atomically."""
    _atomic_write(Path(path), lambda f: f.write(text.encode()))


def _leaf_name(path) -> str:
    return jax.tree_util.keystr(path).lstrip(".")  # e.g. "xp", "warm.w['layer_0']['kernel']"


class ResultsStore:
    """Finished cells and saved states of one config in one folder (see the module docstring).

    Opening a store takes the folder's lock (released by :meth:`release` or when the process ends,
    even by SIGKILL) and checks that results already there belong to the same config. With
    ``writer=False`` (the other processes of a multi-host run) it only reads the finished cells.

    Raises:
      PermissionError: the folder cannot be created or written.
      RuntimeError: another run holds the folder's lock.
      ValueError: the folder holds finished results of another config, or a damaged results file.
        A folder whose config has no finished cell is taken over (its states removed), saying so
        through ``log``.
    """

    def __init__(self, out_dir: Path, config, *, identity: dict | None = None, writer: bool = True, log=print):
        self.out_dir = Path(out_dir)
        self.config = config
        self.identity = identity or {}
        self.hash = config_hash(config, self.identity)
        self.log = log
        self._lock = None
        if not writer:  # another process of a multi-host run writes: only read what is finished
            self.finished = {(r["setting"], r["cell"]): r for r in self._read_records()}
            return
        try:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            (self.out_dir / "state").mkdir(exist_ok=True)
            (self.out_dir / "diagnostics").mkdir(exist_ok=True)
        except OSError as err:
            raise PermissionError(f"cannot create the output folder {str(self.out_dir)!r}: {err.strerror}") from err
        if not os.access(self.out_dir, os.W_OK):
            raise PermissionError(f"the output folder {str(self.out_dir)!r} is not writable: choose another --out")
        self._lock = self._take_lock()
        try:
            self._remove_stale_temporaries()
            self._check_config()
            self.finished = {(r["setting"], r["cell"]): r for r in self._read_records()}
        except BaseException:
            self.release()
            raise

    @property
    def results_path(self) -> Path:
        return self.out_dir / "results.jsonl"

    # -- lock ------------------------------------------------------------------------------
    def _take_lock(self):
        lock = open(self.out_dir / ".lock", "a+")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            holder = lock.read().strip() or "unknown"
            lock.close()
            raise RuntimeError(
                f"another poison-jax run (pid {holder}) is writing to {str(self.out_dir)!r}; "
                f"wait for it to finish or choose another --out"
            ) from None
        lock.seek(0)
        lock.truncate()
        lock.write(str(os.getpid()))
        lock.flush()
        return lock

    def _remove_stale_temporaries(self) -> None:
        """Temporary files of a run killed mid-write (the targets they were meant for are intact)."""
        for tmp in [
            *self.out_dir.glob(".*.tmp"),
            *(self.out_dir / "state").glob(".*.tmp"),
            *(self.out_dir / "diagnostics").glob(".*.tmp"),
        ]:
            tmp.unlink(missing_ok=True)

    def release(self) -> None:
        """Give the folder's lock back (idempotent)."""
        if self._lock is not None and not self._lock.closed:
            fcntl.flock(self._lock, fcntl.LOCK_UN)
            self._lock.close()

    # -- config ----------------------------------------------------------------------------
    def _check_config(self) -> None:
        path = self.out_dir / "config.json"
        mine = {
            "hash": self.hash,
            "config": self.config.to_dict(),
            **({"identity": self.identity} if self.identity else {}),
        }
        if not path.exists():
            atomic_write_text(path, json.dumps(mine, indent=2) + "\n")
            return
        try:
            theirs = json.loads(path.read_text())
            their_hash, their_config = theirs["hash"], theirs["config"]
        except (ValueError, KeyError, TypeError) as err:
            raise ValueError(f"{path} is not a poison-jax config file ({err}); choose another --out") from err
        if their_hash != mine["hash"] and not self._read_records(check_hash=False):
            # No finished cell (e.g. a run that failed before its first cell): nothing to lose.
            for old in [*(self.out_dir / "state").glob("*.npz"), *(self.out_dir / "diagnostics").glob("*.npz")]:
                old.unlink()
            atomic_write_text(path, json.dumps(mine, indent=2) + "\n")
            self.log(
                f"{str(self.out_dir)!r} held no finished cell of its config {their_hash}: "
                f"taken over for this config ({mine['hash']})"
            )
            return
        theirs_flat, mine_flat = legacy.flatten(their_config), legacy.flatten(mine["config"])
        if their_hash != mine["hash"]:
            differ = sorted(
                k for k in mine_flat if k not in ("name", "sweep.settings") and theirs_flat.get(k) != mine_flat[k]
            )
            detail = ", ".join(f"{k}: {theirs_flat.get(k)!r} there, {mine_flat[k]!r} here" for k in differ[:6])
            theirs_id = theirs.get("identity", {})
            detail += "".join(
                f", the {k}: {theirs_id.get(k)!r} there, {v!r} here"
                for k, v in self.identity.items()
                if theirs_id.get(k) != v
            )
            raise ValueError(
                f"{str(self.out_dir)!r} holds results of another config (hash {their_hash}, this one "
                f"{mine['hash']}; {detail}): choose another --out"
            )
        if theirs_flat.get("sweep.settings") != mine_flat["sweep.settings"]:
            atomic_write_text(path, json.dumps(mine, indent=2) + "\n")  # settings may grow between runs

    # -- records ---------------------------------------------------------------------------
    def _read_records(self, *, check_hash: bool = True) -> list[dict]:
        if not self.results_path.exists():
            return []
        return read_records(self.results_path, config_hash=self.hash if check_hash else None)

    def records(self) -> list[dict]:
        """Finished records in the order of the config's settings and cells."""
        order = {s: i for i, s in enumerate(self.config.sweep.settings)}
        return sorted(self.finished.values(), key=lambda r: (order.get(r["setting"], len(order)), r["cell"]))

    def append(self, record: dict) -> None:
        """Add a finished cell's record (atomically rewrites the small results file)."""
        key = (record["setting"], record["cell"])
        if key in self.finished:
            raise ValueError(f"cell {key} is already in {self.results_path}")
        old = self.results_path.read_bytes() if self.results_path.exists() else b""
        line = (json.dumps(record, allow_nan=False) + "\n").encode()
        _atomic_write(self.results_path, lambda f: f.write(old + line))
        self.finished[key] = record

    def copy_cell(self, source: str, setting: str, cell: int, *, label: str) -> dict:
        """Record ``setting``'s cell ``cell`` as a copy of ``source``'s (state and diagnostics first,
        then the line).

        For Λ settings whose log λ is the same for every seed: their cells are the same computation.
        The record says so in ``reused_from``.
        """
        record = {
            **self.finished[(source, cell)],
            "setting": setting,
            "label": label,
            "reused_from": source,
            "wall_time_s": 0.0,
            "compile_time_s": 0.0,
        }
        for path in (self._state_path, self.diagnostics_path):
            saved = path(source, cell)
            if saved.exists():
                _atomic_write(path(setting, cell), lambda f: f.write(saved.read_bytes()))
        self.append(record)
        return record

    # -- attack states ---------------------------------------------------------------------
    def _state_path(self, setting: str, cell: int) -> Path:
        return self.out_dir / "state" / f"{setting}-{cell}.npz"

    def save_state(self, setting: str, cell: int, state: attack.AttackState) -> None:
        """The attack state after a cell (:func:`save_attack_state`)."""
        save_attack_state(self._state_path(setting, cell), state)

    def load_state(self, setting: str, cell: int, template: attack.AttackState) -> attack.AttackState | None:
        """The saved state, structured like ``template`` (a fresh state of the same config), or None
        when there is none or it does not match the template (then the cell is recomputed)."""
        try:
            return load_attack_state(self._state_path(setting, cell), template)
        except (ValueError, KeyError, OSError):
            return None  # a missing or damaged state is recomputed, never trusted

    # -- diagnostics -----------------------------------------------------------------------
    def diagnostics_path(self, setting: str, cell: int) -> Path:
        return self.out_dir / "diagnostics" / f"{setting}-{cell}.npz"

    def save_diagnostics(self, setting: str, cell: int, arrays: dict) -> None:
        """Write a cell's diagnostics (the arrays of :data:`DIAGNOSTICS`) atomically."""
        unknown = set(arrays) - set(DIAGNOSTICS)
        if unknown:
            raise ValueError(f"unknown diagnostics array(s) {sorted(unknown)}: the names are {list(DIAGNOSTICS)}")
        arrays = {k: np.asarray(v) for k, v in arrays.items()}
        _atomic_write(self.diagnostics_path(setting, cell), lambda f: np.savez(f, **arrays))

    def latest_state(self, setting: str, *, before: int, template: attack.AttackState):
        """``(state, next_cell)``: the saved state of the last cell before ``before``, or ``(None, 0)``."""
        for cell in range(before - 1, -1, -1):
            state = self.load_state(setting, cell, template)
            if state is not None:
                return state, cell + 1
        return None, 0


def config_hash(config, identity: dict | None = None) -> str:
    """The hash results are filed under: the config's, combined with what identifies data or a
    model given from Python (``identity``, e.g. ``{"data": <fingerprint>, "model": <name and shapes>}``)."""
    if not identity:
        return config.hash()
    text = json.dumps({"config": config.hash(), **identity}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def save_attack_state(path, state: attack.AttackState) -> None:
    """Write an attack state to ``path`` (``.npz``) atomically: every array leaf (warm starts and the
    outer rules' states included), named by its path in the state (e.g. ``warm.w['layer_0']['kernel']``).

    Example::

        >>> import jax, tempfile, pathlib
        >>> from poison_jax.experiments import store
        >>> from poison_jax.poisoning import attack, data, models
        >>> from poison_jax.engine import RMD
        >>> splits = data.sample_splits(data.load_dataset("digits"), seeds=[0], n_train=50, n_val=20)
        >>> settings = attack.AttackSettings(models.logistic_regression(64), RMD(steps=5, lr=0.5),
        ...                                  alpha=0.5, beta=0.5, x_box=(0.0, 1.0), lam_box=(-8.0, 5.0))
        >>> state = attack.init_attack(settings, jax.random.split(jax.random.PRNGKey(0), 1), splits, 3, 1.6)
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "attack.npz"
        >>> store.save_attack_state(path, state)
        >>> store.load_attack_state(path, state).xp.shape  # the template gives the structure
        (1, 3, 64)
    """
    leaves = jax.tree_util.tree_leaves_with_path(state)
    arrays = {_leaf_name(key): np.asarray(value) for key, value in leaves}
    _atomic_write(Path(path), lambda f: np.savez(f, **arrays))  # type: ignore[arg-type]  # numpy's stubs: **arrays


def load_attack_state(path, template: attack.AttackState) -> attack.AttackState:
    """The attack state saved at ``path`` by :func:`save_attack_state`, structured like ``template``
    (a state of the same settings and shapes, e.g. a fresh :func:`poison_jax.poisoning.attack.init_attack`).

    Raises:
      FileNotFoundError: no file at ``path``.
      ValueError: the file does not hold a state like ``template`` (naming the first mismatch), or is damaged.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no saved attack state at {str(path)!r}")
    paths, treedef = jax.tree_util.tree_flatten_with_path(template)
    try:
        with np.load(path, allow_pickle=False) as saved:
            leaves = []
            for key_path, like in paths:
                name = _leaf_name(key_path)
                if name not in saved.files:
                    raise ValueError(f"{path} holds no {name!r}: it is not a state like the template")
                value = saved[name]
                if value.shape != np.shape(like) or value.dtype != np.asarray(like).dtype:
                    raise ValueError(
                        f"{path}: {name!r} is {value.dtype}{list(value.shape)}, the template's "
                        f"{np.asarray(like).dtype}{list(np.shape(like))}"
                    )
                leaves.append(jnp.asarray(value))
            if len(saved.files) != len(leaves):
                raise ValueError(f"{path} holds {len(saved.files)} arrays, the template {len(leaves)}")
    except (zipfile.BadZipFile, EOFError) as err:
        raise ValueError(f"{path} is damaged ({err})") from err
    return jax.tree_util.tree_unflatten(treedef, leaves)


def read_diagnostics(out_dir) -> dict[tuple[str, int], dict[str, np.ndarray]]:
    """Every readable ``diagnostics/SETTING-CELL.npz`` of a results folder, keyed by ``(setting, cell)``.

    Reads only (no lock): safe on a folder another run is writing. A folder written before
    diagnostics existed gives ``{}``; a damaged file is skipped.
    """
    out = {}
    for path in sorted((Path(out_dir) / "diagnostics").glob("*.npz")):
        setting, _, cell = path.stem.rpartition("-")
        if not setting or not cell.isdigit():
            continue
        try:
            with np.load(path, allow_pickle=False) as saved:
                out[(setting, int(cell))] = {k: saved[k] for k in saved.files}
        except (ValueError, KeyError, OSError, EOFError, zipfile.BadZipFile):
            continue
    return out
