"""Griffe extension for the API reference: turns the docstrings' reST roles into Markdown.

poison_jax's docstrings are Google style with a little reST: ``:func:`unroll```,
``:class:`~poison_jax.engine.NewtonCG```, ``:mod:`poison_jax.experiments.store```, ... Rendered as they are
they would show ``:func:`` in front of a code span. This extension rewrites each role, before the
docstrings are parsed, into

* a cross-reference ``[`unroll`][poison_jax.engine.unroll]`` when the target resolves (from the
  object's own scope outwards, then from the package root) to a public object that the reference
  renders, so the link is checked by ``mkdocs build --strict``;
* a plain code span otherwise (a private name, an object without a docstring, or a name outside
  poison_jax), which can never break the build.

``~`` keeps the last component as the label, as in Sphinx. Two more bits of reST are carried
over: ``Example::`` (a literal block follows) loses one colon, and ``[x][y]`` in prose, a Markdown
reference link, is escaped. And entries that name several parameters or attributes at once
(``x_train, y_train: text`` in ``Args:`` or ``Attributes:``, ``w0: text; theta: text`` in ``Args:``)
are split into one entry a name, as Griffe's Google parser expects. The Python sources are not
changed.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

# ``[x][y]`` in reST prose is text (e.g. "indexed [x][y]"), in Markdown a reference link: escaped.
REF_LINK = re.compile(r"(?<!\\)\]\[")
ROLE = re.compile(r":(?:py:)?(?P<role>func|class|meth|mod|attr|data|obj|exc|const):`(?P<target>[^`]+)`")


def _outside_code(text: str, fix) -> str:
    """Apply ``fix`` to ``text`` outside code spans, fenced code and doctest lines."""
    out, in_block = [], False
    for line in text.split("\n"):
        stripped = line.strip()
        if stripped.startswith(("```", "~~~")):
            in_block = not in_block
        if in_block or stripped.startswith((">>>", "...")):
            out.append(line)
            continue
        parts = re.split(r"(`+[^`]*`+)", line)
        out.append("".join(p if i % 2 else fix(p) for i, p in enumerate(parts)))
    return "\n".join(out)


PARAM_SECTION = re.compile(
    r"^(Args|Arguments|Params|Parameters|Keyword Args|Keyword Arguments|Other Parameters|Attributes):\s*$"
)
JOINT_ITEM = re.compile(r"^(?P<indent>\s*)(?P<names>\*{0,2}\w+(?:\s*,\s*\*{0,2}\w+)+)(?P<rest>\s*(?:\([^)]*\))?:.*)$")


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _split_joint_params(text: str, params: frozenset[str] = frozenset()) -> str:
    """One entry a name in ``Args:`` (and ``Attributes:``) sections, as Griffe's Google parser expects.

    * ``x_train, y_train: text`` -> ``x_train: text`` and ``y_train: text`` (Griffe would warn
      that ``x_train, y_train`` is not a parameter and render the pair as one row);
    * ``w0: text; theta: text``, where ``theta`` is one of ``params`` (the function's parameters),
      -> two entries (Griffe would render ``theta`` as part of ``w0``'s text).
    """
    lines = text.split("\n")
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        out.append(line)
        i += 1
        if not PARAM_SECTION.match(line.strip()):
            continue
        header = _indent(line)
        item = None
        while i < len(lines):
            line = lines[i]
            if line.strip() and _indent(line) <= header:
                break  # the section ends
            if line.strip() and item is None:
                item = _indent(line)
            if line.strip() and _indent(line) == item and params:
                pieces = re.split(r";\s+(?=(?:\*{0,2}\w+)(?:\s*\([^)]*\))?:\s)", line)
                if len(pieces) > 1 and all(re.match(r"\*{0,2}(\w+)", p.strip()).group(1) in params for p in pieces[1:]):
                    pad = " " * item
                    line = pieces[0] + "".join("\n" + pad + p.strip() for p in pieces[1:])
                    lines[i : i + 1] = line.split("\n")
                    line = lines[i]
            m = JOINT_ITEM.match(line) if line.strip() and _indent(line) == item else None
            if not m:
                out.append(line)
                i += 1
                continue
            block = [m.group("rest")]  # the entry and its continuation lines
            i += 1
            while i < len(lines) and (not lines[i].strip() or _indent(lines[i]) > item):
                if not lines[i].strip() and (i + 1 >= len(lines) or _indent(lines[i + 1]) <= item):
                    break
                block.append(lines[i])
                i += 1
            for name in (n.strip() for n in m.group("names").split(",")):
                out.append(m.group("indent") + name + block[0])
                out.extend(block[1:])
    return "\n".join(out)


def _literal_markers(text: str) -> str:
    """reST's ``Example::`` (a literal block follows) -> ``Example:``; a lone ``::`` line goes.

    The indented block after it is then a Markdown code block, and ``Example:`` a Google
    "Examples" section whose ``>>>`` lines render as a console session.
    """
    out = []
    for line in text.split("\n"):
        if line.strip() == "::":
            out.append("")
        elif line.rstrip().endswith("::") and not line.rstrip().endswith(":::") and "`" not in line[-3:]:
            out.append(line.rstrip()[:-1])
        else:
            out.append(line)
    return "\n".join(out)


def _walk(obj: griffe.Object):
    yield obj
    for member in obj.members.values():
        if member.is_alias:
            continue
        yield from _walk(member)


def _lookup(scope: griffe.Object, dotted: str) -> griffe.Object | griffe.Alias | None:
    try:
        return scope[dotted]
    except (KeyError, ValueError, griffe.AliasResolutionError, griffe.CyclicAliasError):
        return None


def _final(obj: griffe.Object | griffe.Alias | None) -> griffe.Object | None:
    if obj is None:
        return None
    if obj.is_alias:
        try:
            return obj.final_target
        except (griffe.AliasResolutionError, griffe.CyclicAliasError):
            return None
    return obj


def _public_modules(pkg: griffe.Module):
    """The package's public modules (no component of the path starting with ``_``), the package too."""
    yield pkg
    for member in pkg.members.values():
        if not member.is_alias and member.is_module and not member.name.startswith("_"):
            yield from _public_modules(member)


def _public_paths(pkg: griffe.Module) -> dict[str, str]:
    """Where the reference renders each object: its path -> the path of its heading.

    The reference (docs/pages/hooks.py) renders every public module, and on each module's page the
    names of its ``__all__`` (all its public names without one) that it defines or takes from a
    private module -- whose public path it is (``poison_jax.engine.hypergrad`` for an object
    defined in ``poison_jax.engine._bilevel``) -- never an object without a docstring.
    """
    paths: dict[str, str] = {}
    for module in _public_modules(pkg):
        paths[module.path] = module.path
        exports = (
            [str(name) for name in module.exports]
            if module.exports is not None
            else [n for n in module.members if not n.startswith("_")]
        )
        for name in exports:
            member = module.members.get(name)
            if member is None:
                continue
            if member.is_alias:
                target = _final(member)
                private = target is not None and any(part.startswith("_") for part in target.path.split(".")[1:])
                if target is None or target.is_module or not private:
                    continue  # a submodule, or a name documented on its own module's page
            else:
                target = member
            if target.docstring:
                paths[target.path] = f"{module.path}.{name}"
    return paths


def _public_path(obj: griffe.Object, paths: dict[str, str]) -> str | None:
    """The path of ``obj``'s heading in the reference, or ``None`` if it is not rendered."""
    if obj.path in paths:
        return paths[obj.path]
    if obj.parent is None or obj.parent.is_module or not obj.docstring:
        return None
    parent = _public_path(obj.parent, paths)  # a documented member of a rendered class
    return None if parent is None else f"{parent}.{obj.name}"


class RstRoles(griffe.Extension):
    """Rewrite ``:role:`target``` in every docstring of the package (see the module docstring)."""

    def __init__(self) -> None:
        super().__init__()
        self._done: set[str] = set()

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        if pkg.path in self._done:
            return
        self._done.add(pkg.path)
        paths = _public_paths(pkg)
        for obj in _walk(pkg):
            if obj.docstring is not None:
                text = _outside_code(obj.docstring.value, lambda part: REF_LINK.sub(r"]\\[", part))
                text = _literal_markers(text)
                params = frozenset(p.name.lstrip("*") for p in obj.parameters) if obj.is_function else frozenset()
                text = _split_joint_params(text, params)
                obj.docstring.value = ROLE.sub(lambda m, obj=obj: self._replace(m, obj, pkg, paths), text)

    def _replace(self, match: re.Match, obj: griffe.Object, pkg: griffe.Module, paths: dict[str, str]) -> str:
        text = match.group("target").strip()
        short = text.startswith("~")
        target = text.lstrip("~.").removesuffix("()")
        label = target.rsplit(".", 1)[-1] if short else target
        resolved = None
        if target == pkg.name:
            resolved = pkg
        elif target.startswith(pkg.name + "."):
            resolved = _final(_lookup(pkg, target[len(pkg.name) + 1 :]))
        else:
            scope: griffe.Object | None = obj
            while scope is not None and resolved is None:
                resolved = _final(_lookup(scope, target))
                scope = scope.parent
        public = None if resolved is None else _public_path(resolved, paths)
        if public is not None:
            return f"[`{label}`][{public}]"
        return f"`{label}`"

    # Older Griffe versions name this event so (newer ones call on_package only).
    on_package_loaded = on_package
