"""One public path to each public name: no aliases, no shims, no name listed where it is not defined.

The public modules are those of ``poison_jax/`` with no component of their dotted name starting
with ``_``; their public names are their ``__all__`` (without one, the names they define at top
level, read with ast). A name is *at home* in a public module when it is defined there or in a
private module of the same folder (``engine/_hypergrad.py`` for ``poison_jax.engine``,
``poisoning/_flax.py`` for ``poison_jax.poisoning.models``). Each check lists every offender.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import types
from pathlib import Path

import pytest

PACKAGE_DIR = Path(__file__).resolve().parent.parent / "poison_jax"
PACKAGE = PACKAGE_DIR.name


def _dotted(path: Path) -> str:
    parts = path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_public(dotted: str) -> bool:
    return not any(part.startswith("_") for part in dotted.split("."))


FILES = {_dotted(p): p for p in sorted(PACKAGE_DIR.rglob("*.py"))}
PUBLIC = sorted(m for m in FILES if _is_public(m))


def _top_level_names(path: Path) -> list[str]:
    """The public names a module without ``__all__`` defines (def, class, assignment)."""
    names = []
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.append(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names += [t.id for t in targets if isinstance(t, ast.Name)]
    return [n for n in names if not n.startswith("_")]


def _exports(module: types.ModuleType) -> list[str]:
    names = getattr(module, "__all__", None)
    return list(names) if names is not None else _top_level_names(FILES[module.__name__])


def _public_prefix(dotted: str) -> str:
    """``poison_jax.engine._hypergrad`` -> ``poison_jax.engine``: the part before the first private component."""
    parts = dotted.split(".")
    for i, part in enumerate(parts):
        if part.startswith("_"):
            return ".".join(parts[:i])
    return dotted


def _home(module: str) -> set[str]:
    """The public modules whose names may be defined in ``module``: itself, or for a private module
    the public folder that holds it and that folder's public modules."""
    prefix = _public_prefix(module)
    if prefix == module:
        return {module}
    return {prefix} | {m for m in PUBLIC if m.rpartition(".")[0] == prefix}


@pytest.fixture(scope="module")
def modules() -> dict[str, types.ModuleType]:
    return {name: importlib.import_module(name) for name in PUBLIC}


def test_the_package_has_its_four_floor_folders_and_their_public_modules():
    assert {f"{PACKAGE}.engine", f"{PACKAGE}.poisoning", f"{PACKAGE}.experiments", f"{PACKAGE}.face"} <= set(PUBLIC)
    assert f"{PACKAGE}.poisoning.victims" in PUBLIC and f"{PACKAGE}.experiments.sweep" in PUBLIC
    assert f"{PACKAGE}.experiment" not in FILES and f"{PACKAGE}.poisoning.evaluate" not in FILES


def test_every_name_in_all_exists(modules):
    missing = [f"{m}.__all__ lists {n!r}, which it does not define or import" for m, mod in modules.items()
               for n in getattr(mod, "__all__", ()) if not hasattr(mod, n)]  # fmt: skip
    assert not missing, "\n".join(missing)


def test_all_has_no_duplicates(modules):
    twice = [f"{m}.__all__ lists {n!r} twice" for m, mod in modules.items()
             for n in set(getattr(mod, "__all__", ())) if list(mod.__all__).count(n) > 1]  # fmt: skip
    assert not twice, "\n".join(twice)


def test_a_module_exports_only_its_own_submodules(modules):
    """A module in ``__all__`` is a submodule of the exporting package (``poisoning.__all__`` lists
    ``attack``), never another module under a second name."""
    bad = []
    for m, mod in modules.items():
        for n in _exports(mod):
            obj = getattr(mod, n, None)
            if isinstance(obj, types.ModuleType) and obj.__name__ != f"{m}.{n}":
                bad.append(f"{m}.{n} is the module {obj.__name__}: import it from its own folder")
    assert not bad, "\n".join(bad)


def test_functions_and_classes_are_exported_where_they_are_defined(modules):
    """Every function and class of an ``__all__`` is defined in that module, or in a private module
    of its folder (whose public path it is); one from another public module is an alias."""
    bad = []
    for m, mod in modules.items():
        for n in _exports(mod):
            obj = getattr(mod, n, None)
            if not (inspect.isclass(obj) or inspect.isfunction(obj) or inspect.isbuiltin(obj)):
                continue
            defined = getattr(obj, "__module__", None) or "?"
            if m not in _home(defined):
                where = "a private module of another folder" if not _is_public(defined) else "another module"
                bad.append(f"{m}.{n} is defined in {defined} ({where}): write {_public_prefix(defined)}.{n}")
    assert not bad, "\n".join(bad)


def test_no_object_is_exported_by_two_public_modules(modules):
    """The same object (a function, a class, a table such as ``PRESETS``) in two modules' public
    names is an alias: one of them must go."""
    seen: dict[int, list[str]] = {}
    keep: list[object] = []  # the objects, alive while their ids are compared
    for m, mod in modules.items():
        for n in _exports(mod):
            obj = getattr(mod, n, None)
            if obj is None or isinstance(obj, (types.ModuleType, bool, int, float, str, bytes)):
                continue  # modules are checked above; equal literals are not aliases
            keep.append(obj)
            seen.setdefault(id(obj), []).append(f"{m}.{n}")
    aliases = [" = ".join(paths) for paths in seen.values() if len(paths) > 1]
    assert not aliases, "names with two public paths (keep one):\n" + "\n".join(sorted(aliases))


def test_the_top_level_package_exports_only_the_floors(modules):
    root = modules[PACKAGE]
    assert set(root.__all__) <= {"engine", "poisoning", "experiments"}, root.__all__
    assert not hasattr(root, "run_sweep") and not hasattr(root, "hypergrad")
