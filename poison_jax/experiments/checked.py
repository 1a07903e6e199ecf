"""The base of every config section and the config's checks (floor 2), in one module.

A :class:`Section` is a frozen dataclass whose fields are :func:`option` s: a default, what the
field means (``metadata["help"]``) and the check its value must pass, run at construction with the
field's path in the message (the generic checks of :mod:`poison_jax.engine.checks`, raising
:class:`ConfigError`). :func:`family` lists a choice's alternatives by ``kind``.

Example::

    >>> from poison_jax.experiments import checked
    >>> checked.positive_int("sweep.num_seeds", 0)
    Traceback (most recent call last):
    ...
    poison_jax.experiments.checked.ConfigError: sweep.num_seeds must be a positive integer, got 0
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, TypeVar

from poison_jax.engine import checks

__all__ = ["ConfigError", "Section", "family", "is_a", "option"]


class ConfigError(ValueError):
    """A config field has a value that is not allowed; the message names the field's path and what is allowed."""


Check = Callable[[str, Any], Any]


def option(default: Any, help: str, check: Check | None = None) -> Any:
    """A config field: its default, what it means (``help``) and the check its value must pass
    (called as ``check(path, value)``, raising :class:`ConfigError`)."""
    return dataclasses.field(default=default, metadata={"help": help, "check": check})


def _checked(fn: Callable[..., Any], **kwargs: Any) -> Check:
    return functools.partial(fn, error=ConfigError, **kwargs)


positive_int: Check = _checked(checks.positive_int)
count: Check = _checked(checks.integer, low=0)
positive: Check = _checked(checks.positive_finite)
non_negative: Check = _checked(checks.positive_finite, allow_zero=True)
finite: Check = _checked(checks.finite)


def unit(path: str, value: Any) -> None:
    """A number in [0, 1]."""
    if not checks.is_real(value) or not 0 <= value <= 1:
        checks.fail(path, value, "a number in [0, 1]", error=ConfigError)


def boolean(path: str, value: Any) -> None:
    """True or false."""
    if value not in (True, False):
        checks.fail(path, value, "true or false", error=ConfigError)


def one_of(*allowed: str) -> Check:
    """One of ``allowed`` (strings)."""
    return _checked(checks.one_of, allowed=allowed)


def box(path: str, value: Any) -> None:
    """A pair (low, high) of finite numbers, low < high."""
    checks.box(path, value, error=ConfigError)


def grid(path: str, value: Any) -> None:
    """A grid ``(low, high, count)``: low < high, an integer count >= 2."""
    ok = isinstance(value, tuple) and len(value) == 3 and checks.is_real(value[0]) and checks.is_real(value[1])
    if not (ok and value[0] < value[1] and checks.is_int(value[2]) and value[2] >= 2):
        checks.fail(path, value, "(low, high, count) with low < high and an integer count >= 2", error=ConfigError)


def name(path: str, value: Any) -> None:
    """A non-empty string."""
    if not isinstance(value, str) or not value:
        checks.fail(path, value, "a non-empty name", error=ConfigError)


def _jsonable(value: Any) -> Any:
    if isinstance(value, Section):
        return value.to_dict()
    return list(value) if isinstance(value, tuple) else value


@dataclasses.dataclass(frozen=True)
class Section:
    """A section of the config: checked fields; ``kind`` names the choice (empty for a section
    without alternatives) and ``at`` where it sits in the config (for messages)."""

    kind: ClassVar[str] = ""
    at: ClassVar[str] = ""

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, list):  # from JSON or a --set list
                value = tuple(value)
                object.__setattr__(self, f.name, value)
            if f.metadata.get("check") is not None:
                f.metadata["check"](f"{self.at}.{f.name}" if self.at else f.name, value)

    def to_dict(self) -> dict[str, Any]:
        """The section as JSON values: ``{"kind": ..., field: value, ...}`` (nested sections as dicts)."""
        kind = {"kind": self.kind} if self.kind else {}
        return {**kind, **{f.name: _jsonable(getattr(self, f.name)) for f in dataclasses.fields(self)}}


S = TypeVar("S", bound=Section)


def family(*choices: type[S]) -> dict[str, type[S]]:
    """``{kind: section class}`` of a choice's alternatives."""
    return {c.kind: c for c in choices}


def is_a(allowed: Mapping[str, type[Section]]) -> Check:
    """A section of one of ``allowed``'s kinds."""

    def check(path: str, value: Any) -> None:
        if not isinstance(value, tuple(allowed.values())):
            checks.fail(path, value, f"a section of kind {', '.join(allowed)}", error=ConfigError)

    return check
