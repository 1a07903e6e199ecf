"""The package's form, read with ast: modules within 400 lines, functions within 60, no module
importing another module's private names, nothing importing jax's private ``jax._src``.

Each test lists every offender in its message (path, line, what and how long), not only the first.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "poison_jax"
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60

MODULES = sorted(PACKAGE.rglob("*.py"))


def _rel(path: Path) -> str:
    return path.relative_to(PACKAGE.parent).as_posix()


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def _is_private(name: str) -> bool:
    """``_x`` is private; a dunder (``__version__``, ``__future__``'s names) is not."""
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def test_the_package_has_modules():
    assert len(MODULES) > 20, f"found only {len(MODULES)} modules under {PACKAGE}"


def test_modules_within_400_lines():
    long = [
        f"{_rel(p)}: {n} lines"
        for p in MODULES
        if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES
    ]
    assert not long, f"modules over {MAX_MODULE_LINES} lines (split them by idea):\n" + "\n".join(long)


def test_functions_within_60_lines():
    long = []
    for path in MODULES:
        for node in ast.walk(_tree(path)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    long.append(f"{_rel(path)}:{node.lineno} {node.name}: {length} lines")
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines, def to last line:\n" + "\n".join(long)


def _private_imports(tree: ast.Module) -> list[tuple[int, str]]:
    """``(line, "from M import _x")`` for each private name imported from another module.

    Importing a private *module*'s public names (``from poison_jax.poisoning._flax import
    from_flax``) is allowed: that is how a public module re-exports what it keeps in a private one.
    """
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            module = "." * node.level + (node.module or "")
            found += [(node.lineno, f"from {module} import {a.name}") for a in node.names if _is_private(a.name)]
    return found


def _jax_private(tree: ast.Module) -> list[tuple[int, str]]:
    """``(line, what)`` for each import of ``jax._src`` and each attribute ``jax._src``."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, f"import {a.name}") for a in node.names if a.name.startswith("jax._src")]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[:2] == ["jax", "_src"]:
            found.append((node.lineno, f"from {node.module} import ..."))
        elif isinstance(node, ast.ImportFrom) and node.module == "jax" and any(a.name == "_src" for a in node.names):
            found.append((node.lineno, "from jax import _src"))
        elif isinstance(node, ast.Attribute) and node.attr == "_src" and isinstance(node.value, ast.Name):
            if node.value.id == "jax":
                found.append((node.lineno, "jax._src"))
    return found


def test_no_module_imports_private_names_of_another():
    found = [f"{_rel(p)}:{line} {what}" for p in MODULES for line, what in _private_imports(_tree(p))]
    assert not found, (
        "private names imported from another module (make the name public in a private module, or move it):\n"
        + "\n".join(found)
    )


def test_nothing_imports_jax_private():
    found = [f"{_rel(p)}:{line} {what}" for p in MODULES for line, what in _jax_private(_tree(p))]
    assert not found, "uses of jax's private jax._src (use jax's public API):\n" + "\n".join(found)


@pytest.mark.parametrize(
    ("source", "private", "jax_private"),
    [
        ("from poison_jax.poisoning.models import _kernel_leaves", 1, 0),
        ("from ._solvers import _same_structure, check_positive_int", 1, 0),
        ("from poison_jax.poisoning._flax import from_flax\nfrom __future__ import annotations", 0, 0),
        ("from poison_jax import __version__", 0, 0),
        ("import jax\nT = jax._src.core.Tracer", 0, 1),
        ("from jax._src import core", 0, 1),
        ("import jax._src.core as c", 0, 1),
        ("from jax import _src", 1, 1),
    ],
)
def test_the_import_rules_see_what_they_should(source, private, jax_private):
    tree = ast.parse(source)
    assert len(_private_imports(tree)) == private
    assert len(_jax_private(tree)) == jax_private
