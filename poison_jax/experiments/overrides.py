"""``--set PATH=VALUE`` read without ``eval`` (floor 2).

A value is a Python literal (``3``, ``0.5``, ``(0, 1)``, ``None``, ``'text'``), ``true`` / ``false``
/ ``none``, ``log(x)`` of a positive number (also inside a tuple: ``(-8, log(200))``, and negated),
a bare name (``implicit``, ``small,learned`` for a tuple of names), or else the text as given (a
path such as ``data/my.npz``). :func:`~poison_jax.experiments.config.override` then sets the paths.

Example::

    >>> from poison_jax.experiments.overrides import parse_overrides
    >>> parse_overrides(["sweep.num_seeds=3", "attack.log_lam_box=(-8, log(1))", "method=implicit"])
    {'sweep.num_seeds': 3, 'attack.log_lam_box': (-8, 0.0), 'method': 'implicit'}
"""

from __future__ import annotations

import ast
import math
from typing import Any

from poison_jax.experiments.checked import ConfigError

__all__ = ["parse_overrides", "parse_value"]

_WORDS = {"none": None, "null": None, "true": True, "false": False}


class _NotALiteral(ValueError):
    pass


def _value(node: ast.AST) -> Any:
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float, str, type(None))):
        return node.value
    if isinstance(node, (ast.Tuple, ast.List)):
        return tuple(_value(item) for item in node.elts)
    if isinstance(node, ast.Name):
        return _WORDS.get(node.id.lower(), node.id)  # a bare name is text: method=implicit
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        number = _value(node.operand)
        if isinstance(number, (int, float)) and not isinstance(number, bool):
            return -number if isinstance(node.op, ast.USub) else number
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "log" and not node.keywords:
        if len(node.args) == 1:
            x = _value(node.args[0])
            if isinstance(x, (int, float)) and not isinstance(x, bool) and x > 0:
                return math.log(x)
            raise ConfigError(f"log(x) takes a positive number, got log({ast.unparse(node.args[0])})")
    raise _NotALiteral(ast.unparse(node))


def parse_value(text: str) -> Any:
    """One ``--set`` value (see the module's description)."""
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError:
        return text.strip()
    try:
        return _value(tree.body)
    except _NotALiteral:
        return text.strip()  # e.g. newton-cg, results/my.npz


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``["path=value", ...]`` from ``--set`` into ``{path: value}``.

    Raises:
      ConfigError: an item without ``=``, or an empty path.
    """
    overrides = {}
    for item in items:
        path, sep, text = item.partition("=")
        if not sep or not path.strip():
            raise ConfigError(f"--set takes PATH=VALUE (e.g. sweep.num_seeds=3), got {item!r}")
        overrides[path.strip()] = parse_value(text)
    return overrides
