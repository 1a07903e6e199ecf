"""Kernel launches of a compiled XLA program, read from its optimised HLO text.

:func:`parse` reads ``compiled.as_text()``: its computations, the ``while`` loops (nested through
their ``body=`` computations), the ops of each body and condition that would each be one kernel
launch on a GPU, and each loop's Python call site (the HLO's stack-frame tables). :func:`launches`
multiplies them by trip counts: static ones come from the HLO (``known_trip_count``), the others
must be measured (:mod:`benchmarks.loop_trips`).

Counting rule, per execution of a computation that runs on the host's control path (the entry,
``while`` bodies and conditions, ``call`` and ``conditional`` targets):

* 1 launch for each op that is a kernel or a library call: ``fusion``, ``custom-call``, ``dot``,
  ``convolution``, ``copy``, ``reduce``, ``scatter``, ``sort``, ``dynamic-update-slice``, any other
  op left unfused (on a GPU each of these is one kernel, a cuBLAS call or a memcpy);
* 0 for what allocates or aliases buffers without work: ``parameter``, ``constant``,
  ``get-tuple-element``, ``tuple``, ``bitcast``, ``copy-start``/``copy-done``, ``after-all``,
  ``add-dependency``, ``opt-barrier``, ``partition-id``, ``replica-id``, ``domain``;
* a ``call`` costs what its target costs; a ``conditional`` what its dearest branch costs (an upper
  bound: which branch runs is not known here) plus 1 (its branch index is read back to the host);
* a ``while`` costs ``trips x body + (trips + 1) x condition`` each time it runs; a loop without a
  static trip count also reads its predicate back to the host once per condition evaluation
  (``host_syncs``); ops inside fused computations, reducers and comparators are not counted (they
  run inside their kernel).

The HLO is the CPU backend's: XLA fuses differently for a GPU (it fuses more elementwise work and
turns dots into cuBLAS calls or Triton fusions), so the count is a proxy for a GPU's launches, not
their number.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import NamedTuple

import poison_jax

PACKAGE = str(Path(poison_jax.__file__).resolve().parent) + "/"
NO_LAUNCH = frozenset(
    {
        "parameter",
        "constant",
        "get-tuple-element",
        "tuple",
        "bitcast",
        "copy-start",
        "copy-done",
        "after-all",
        "add-dependency",
        "opt-barrier",
        "partition-id",
        "replica-id",
        "domain",
    }
)
_HEADER = re.compile(r"^(ENTRY\s+)?%?([\w.\-]+)\s.*\{\s*$")
_ASSIGN = re.compile(r"^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=\s*(.*)$")

Key = tuple[tuple[str, int], ...]  # (file under the package, line) of each package frame, innermost first


class Loop(NamedTuple):
    """One ``while`` op: ``parent`` is the loop whose body holds it (``None``: outside loops)."""

    name: str
    key: Key
    where: str  # innermost frame, "file:function:line"
    parent: str | None
    depth: int
    body_ops: int
    cond_ops: int
    static_trips: int | None  # XLA's known_trip_count; None: data-dependent


class Program(NamedTuple):
    """What :func:`parse` found: launching ops outside loops, the loops (a loop before those in its
    body) and how often each launching opcode appears in the control computations."""

    outside_ops: int
    loops: tuple[Loop, ...]
    opcodes: dict[str, int]


def opcode(rhs: str) -> str:
    """The opcode of an instruction's right-hand side ``TYPE opcode(operands), attributes``."""
    if rhs.startswith("("):  # a tuple type: skip its balanced parentheses
        depth, end = 0, 0
        while end == 0 or depth:
            depth += (rhs[end] == "(") - (rhs[end] == ")")
            end += 1
        rest = rhs[end:]
    else:
        rest = rhs.split(" ", 1)[1]
    match = re.match(r"\s*([\w\-]+)\(", rest)
    if match is None:
        raise ValueError(f"no opcode in HLO instruction {rhs[:200]!r}")
    return match.group(1)


def computations(text: str) -> tuple[dict[str, list[str]], str]:
    """``({name: its instruction lines}, entry name)`` of an HLO module's text."""
    comps: dict[str, list[str]] = {}
    current, entry = None, None
    for line in text.splitlines():
        header = _HEADER.match(line) if not line.startswith((" ", "HloModule")) else None
        if header:
            current = header.group(2)
            comps[current] = []
            entry = current if header.group(1) else entry
        elif line.startswith("}"):
            current = None
        elif current is not None and _ASSIGN.match(line):
            comps[current].append(line)
    if entry is None:
        raise ValueError("no ENTRY computation in the HLO text")
    return comps, entry


def _table(text: str, name: str) -> dict[int, str]:
    match = re.search(rf"^{name}\n(.*?)(?:\n\n|\Z)", text, re.S | re.M)
    rows = match.group(1).splitlines() if match else []
    return {int(row.split(None, 1)[0]): row.split(None, 1)[1] for row in rows if row.strip()}


def stack_frames(text: str):
    """A function of an op's ``stack_frame_id``: its call stack as ``(file, function, line)``, innermost
    first, from the module's FileNames / FunctionNames / FileLocations / StackFrames tables."""
    files = {i: v.strip('"') for i, v in _table(text, "FileNames").items()}
    functions = {i: v.strip('"') for i, v in _table(text, "FunctionNames").items()}
    fields = lambda v: {k: int(x) for k, x in re.findall(r"(\w+)=(\d+)", v)}
    locations = {i: fields(v) for i, v in _table(text, "FileLocations").items()}
    frames = {i: fields(v) for i, v in _table(text, "StackFrames").items()}

    def stack(frame_id: int) -> list[tuple[str, str, int]]:
        out, seen = [], set()
        while frame_id in frames and frame_id not in seen:  # parents are printed one-based, 1: none
            seen.add(frame_id)
            loc = locations[frames[frame_id]["file_location_id"]]
            out.append((files[loc["file_name_id"]], functions[loc["function_name_id"]], loc["line"]))
            frame_id = frames[frame_id]["parent_frame_id"] - 1
        return out

    return stack


def package_key(stack) -> Key:
    """The frames of a stack inside the poison_jax package, as ``(path under it, line)``."""
    return tuple((f[len(PACKAGE) :], line) for f, _, line in stack if f.startswith(PACKAGE))


def _trips(line: str) -> int | None:
    match = re.search(r'"known_trip_count":\{"n":"(\d+)"\}', line)
    return int(match.group(1)) if match else None


def _branches(line: str) -> list[str]:
    match = re.search(r"branch_computations=\{([^}]*)\}", line)
    return re.findall(r"%?([\w.\-]+)", match.group(1)) if match else []


def parse(text: str) -> Program:
    """The loops and launching ops of an optimised HLO module (``compiled.as_text()``)."""
    comps, entry = computations(text)
    stack = stack_frames(text)
    loops: list[Loop] = []
    opcodes: dict[str, int] = {}

    def ops_of(comp: str, parent: str | None, depth: int) -> int:
        """Launching ops of one execution of ``comp``, loops in it registered, not counted."""
        total = 0
        for line in comps[comp]:
            name, rhs = _ASSIGN.match(line).groups()
            op = opcode(rhs)
            targets = lambda attr: re.findall(rf"{attr}=%?([\w.\-]+)", line)
            if op == "while":
                frame = re.search(r"stack_frame_id=(\d+)", line)
                frames = stack(int(frame.group(1))) if frame else []
                where = f"{Path(frames[0][0]).name}:{frames[0][1]}:{frames[0][2]}" if frames else "?"
                where += " (reverse pass)" if "transpose(" in line else ""
                index = len(loops)
                loops.append(Loop(name, package_key(frames), where, parent, depth, 0, 0, _trips(line)))
                cond, body = targets("condition")[0], targets("body")[0]
                body_ops, cond_ops = ops_of(body, name, depth + 1), ops_of(cond, name, depth + 1)
                loops[index] = loops[index]._replace(body_ops=body_ops, cond_ops=cond_ops)
            elif op == "call":
                total += sum(ops_of(c, parent, depth) for c in targets("to_apply"))
            elif op == "conditional":
                branches = _branches(line) + targets("true_computation") + targets("false_computation")
                total += 1 + max((ops_of(c, parent, depth) for c in branches if c in comps), default=0)
            elif op not in NO_LAUNCH:
                total += 1
                opcodes[op] = opcodes.get(op, 0) + 1
        return total

    outside = ops_of(entry, None, 0)
    return Program(outside, tuple(loops), dict(sorted(opcodes.items(), key=lambda kv: -kv[1])))


def launches(program: Program, trips: dict[str, float], runs: dict[str, float]) -> dict:
    """Launches and host syncs of one execution of ``program``.

    Args:
      trips, runs: by loop name, the body executions and the loop's executions (over all the runs of
        its enclosing loops) of the loops without a static trip count (one missing counts one trip a
        run); a static loop runs as many times as its parent's body (once outside loops) and its
        trips are its count times that.
    Returns:
      ``{"launches", "host_syncs", "loops": {name: {"trips", "runs", "launches"}}}``.
    """
    per_loop: dict[str, dict] = {}
    total, syncs = float(program.outside_ops), 0.0
    for loop in program.loops:  # parents first
        outer_runs = 1.0 if loop.parent is None else per_loop[loop.parent]["trips"]
        if loop.static_trips is not None:
            n_runs, n_trips = outer_runs, loop.static_trips * outer_runs
        else:  # not measured: once a run, and said so by the caller
            n_runs, n_trips = runs.get(loop.name, outer_runs), trips.get(loop.name, outer_runs)
            syncs += n_trips + n_runs
        cost = n_trips * loop.body_ops + (n_trips + n_runs) * loop.cond_ops
        per_loop[loop.name] = {"trips": n_trips, "runs": n_runs, "launches": cost}
        total += cost
    return {"launches": total, "host_syncs": syncs, "loops": per_loop}
