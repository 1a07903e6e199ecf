"""README.md is a front page; the guide lives in hand-written pages of the documentation site.

The checks here read the Markdown files (fast); the last ones run the README's Python example and
build the site with ``mkdocs build --strict`` (slow; the ``test`` extra installs the ``docs`` one it needs).
"""

from __future__ import annotations

import json
import posixpath
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
PAGES = ROOT / "docs" / "pages"
TEST_COMMAND = 'pip install -e ".[test]" && python -m pytest -q'

# The guide's pages in the order of the site's navigation (changelog.md is CHANGELOG.md, generated).
GUIDE = [
    "index.md",
    "getting-started.md",
    "own-model-and-data.md",
    "how-to-choose.md",
    "faq.md",
    "experiments.md",
    "results.md",
    "performance.md",
    "changelog.md",
]

# Figures that change from run to run: test counts, timings, ratios of timings, error rates.
VOLATILE = re.compile(
    r"\b\d[\d,]*\s+(?:tests?|passed|failed|skipped|deselected|errors?)\b"  # 432 tests, 368 passed
    r"|\b\d+(?:\.\d+)?\s*(?:ms|s|secs?|seconds?|min|mins|minutes?|h|hours?)\b"  # 1 min 37 s, 0.55 s, 116 s
    r"|\b\d+(?:\.\d+)?\s?[x×](?![\w\d])"  # 0.22x, 3.6x
    r"|\d+(?:\.\d+)?\s?%"  # 12.2 %, 16.6 %
    r"|±"  # 0.7 ± 0.3
)

LINK = re.compile(r"!?\[(?:[^\]`]|`[^`]*`)*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^\s*(```+|~~~+)")


def outside_fences(text: str) -> list[str]:
    lines, fence = [], None
    for line in text.splitlines():
        m = FENCE.match(line)
        if m:
            marker = m.group(1)
            if fence is None:
                fence = marker[0] * 3
            elif marker.startswith(fence):
                fence = None
            continue
        if fence is None:
            lines.append(line)
    return lines


def fenced_blocks(text: str, lang: str) -> list[str]:
    return re.findall(rf"^```{lang}\n(.*?)^```$", text, flags=re.S | re.M)


def local_links(path: Path) -> list[str]:
    targets = LINK.findall("\n".join(outside_fences(path.read_text(encoding="utf-8"))))
    return [t for t in targets if not re.match(r"^[a-z][a-z0-9+.-]*:", t) and not t.startswith("#")]


def page_text(name: str) -> str:
    return (PAGES / name).read_text(encoding="utf-8")


# -- README.md: a front page ----------------------------------------------------------------------


def test_the_volatile_figure_pattern_finds_figures_and_spares_the_commands():
    for line in [
        "368 tests in 4 min 34 s on this 2-core machine, against 13 min 55 s for all 432",
        "Measured on this 2-core CPU machine: 1 min 37 s",
        "0.55 s median in a fresh interpreter",
        "Strong attack: **116 s on 2 CPU cores** (1.93 min for the whole command",
        "poison_jax needs **0.22x** the time of the fastest",
        "| 0.0 | 0.7 ± 0.3 | -8.00 |",
        "holds: 0.7 % → 12.2 %.",
        "432 passed, 3 skipped",
    ]:
        assert VOLATILE.search(line), line
    for line in [
        TEST_COMMAND,
        "pip install . && poison-jax demo",
        'python -m pytest -q -m "not slow"',
        "Python ≥ 3.10 and pip.",
        "splits = data.sample_splits(ds, seeds=[0, 1, 2, 3], n_train=200, n_val=70)  # 4 random splits",
        "RMD(steps=100, lr=0.5),  # the paper's hypergradient: reverse mode through T = 100 steps",
        'ds = data.load_dataset("digits")  # scikit-learn\'s 8x8 digits, 0 v 8: offline',
        "> poison_jax developers. *poison_jax*, version 0.1.0. Apache-2.0.",
        "arXiv:2003.00040, 2020.",
    ]:
        assert not VOLATILE.search(line), line


def test_readme_is_a_front_page_of_at_most_200_lines_with_no_figure_that_changes_between_runs():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 200, f"README.md has {len(lines)} lines; the limit is 200"
    volatile = [f"{i}: {line}" for i, line in enumerate(lines, 1) if VOLATILE.search(line)]
    assert not volatile, "README.md quotes figures that change from run to run:\n" + "\n".join(volatile)


def test_readme_gives_the_two_commands_and_ci_runs_the_test_command_as_written():
    bash = "\n".join(fenced_blocks(README.read_text(encoding="utf-8"), "bash")).splitlines()
    assert "pip install . && poison-jax demo" in bash
    assert TEST_COMMAND in bash
    assert TEST_COMMAND in (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()


def test_readme_links_every_guide_page_and_each_link_resolves():
    links = local_links(README)
    for target in links:
        path = target.partition("#")[0]
        assert (ROOT / path).exists(), f"README.md links {target}, which does not exist"
    linked = {posixpath.normpath(t.partition("#")[0]) for t in links}
    for page in GUIDE[1:-1]:
        assert f"docs/pages/{page}" in linked, f"README.md does not link docs/pages/{page}"
    assert "CHANGELOG.md" in linked


def test_readme_and_home_page_show_the_same_python_example():
    readme = fenced_blocks(README.read_text(encoding="utf-8"), "python")
    home = fenced_blocks(page_text("index.md"), "python")
    assert len(readme) == 2 and readme[0] == home[0]
    assert 15 <= len(readme[0].splitlines()) <= 30
    # the second is a digest of the own-model guide: every call it shows is on that page
    guide = page_text("own-model-and-data.md")
    for call in ("data.from_arrays(", "models.from_flax(", "run_sweep(", 'presets.preset("digits-lr"'):
        assert call in readme[1] and call in guide, call


@pytest.mark.slow
def test_the_readme_python_example_runs(tmp_path):
    code = fenced_blocks(README.read_text(encoding="utf-8"), "python")[0]
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "test error per seed:" in done.stdout


# -- the hand-written pages -----------------------------------------------------------------------


def test_the_site_navigation_lists_the_guide_in_order():
    config = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    nav = config[config.index("\nnav:\n") :]
    nav = nav[: re.search(r"\n\S", nav[1:]).start() + 1]
    listed = re.findall(r"^\s*- [^:\n]+: (\S+\.md)\s*$", nav, flags=re.M)
    assert [page for page in listed if page in GUIDE] == GUIDE  # other pages may come between
    on_disk = {p.relative_to(PAGES).as_posix() for p in PAGES.rglob("*.md")}
    assert set(GUIDE) - {"changelog.md"} <= on_disk
    assert not (PAGES / "changelog.md").exists()  # the site's changelog is CHANGELOG.md
    changelog = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    headings = re.findall(r"^## (.+)$", changelog, flags=re.M)
    assert headings[:2] == ["0.2.0 (unreleased)", "0.1.0"]
    version = re.search(r'^version = "(.+)"$', (ROOT / "pyproject.toml").read_text(encoding="utf-8"), flags=re.M)
    assert headings[0].split()[0] == version.group(1), "the changelog's first section is pyproject.toml's version"
    assert f"\nversion: {version.group(1)}\n" in (ROOT / "CITATION.cff").read_text(encoding="utf-8")


# A page's ```python blocks run in order in one namespace, as a reader pastes them; a ```text block
# right after one is what it prints. A fragment that is not meant to run (a signature, a line in
# context) is fenced ```py. index.md's example is README's, which test_the_readme_python_example_runs runs.
EXAMPLE = re.compile(r"^```python\n(.*?)^```\n(?:\n```text\n(.*?)^```$)?", flags=re.S | re.M)
EXAMPLE_PAGES = sorted(
    p.relative_to(PAGES).as_posix()
    for p in PAGES.rglob("*.md")
    if p.name != "index.md" and EXAMPLE.search(p.read_text(encoding="utf-8"))
)
_RUN_EXAMPLES = r"""
import contextlib, io, json, sys
scope = {"__name__": "__main__"}
for i, (code, expected) in enumerate(json.loads(sys.stdin.read())):
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(code, f"python block {i + 1}", "exec"), scope)
    if expected and printed.getvalue() != expected:
        sys.exit(f"python block {i + 1} printed\n{printed.getvalue()}instead of the page's\n{expected}")
"""


def test_the_pages_that_teach_the_api_have_examples_that_run():
    assert {"own-model-and-data.md", "how-to-choose.md", "hyperopt.md", "defences.md"} <= set(EXAMPLE_PAGES)


@pytest.mark.slow
@pytest.mark.parametrize("page", EXAMPLE_PAGES)
def test_the_python_examples_of_a_page_run_and_print_what_it_shows(page, tmp_path):
    blocks = EXAMPLE.findall(page_text(page))
    done = subprocess.run(
        [sys.executable, "-c", _RUN_EXAMPLES],
        input=json.dumps(blocks),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, f"docs/pages/{page}: {done.stderr[-3000:]}"


def documented_commands() -> list[tuple[str, list[str]]]:
    """``(file, argv)`` of every ``poison-jax`` command in a ```bash block of README.md or a page (lines
    joined at a trailing backslash, split at ``&&``, comments dropped); placeholders such as FOLDER,
    NAME or DIR stay in."""
    found = []
    for path in (README, *sorted(PAGES.rglob("*.md"))):
        for block in fenced_blocks(path.read_text(encoding="utf-8"), "bash"):
            for line in block.replace("\\\n", " ").splitlines():
                for command in line.split("&&"):
                    words = shlex.split(command, comments=True)
                    if words[:1] == ["poison-jax"]:
                        found.append((path.name, words[1:]))
    return found


def test_every_documented_command_line_is_one_the_cli_takes(capsys):
    """Each ``run`` and ``demo`` command resolves to a config (``--dry-run``: a wrong --set field or
    value fails), each ``presets`` command runs, and the others parse."""
    from poison_jax.face import cli

    commands = [(page, argv) for page, argv in documented_commands() if not set(argv) & {"FOLDER", "NAME", "DIR"}]
    assert sum(argv[:1] == ["run"] for _, argv in commands) >= 20
    for page, argv in commands:
        if argv[0] in ("run", "demo", "presets"):
            status = cli.main([*argv, "--dry-run"] if argv[0] != "presets" else argv)
            assert status == 0, f"{page}: poison-jax {' '.join(argv)}: {capsys.readouterr().err}"
        else:  # plot, synthetic, example: parsed (--help exits 0 after printing)
            try:
                cli.build_parser().parse_args(argv)
            except SystemExit as stop:
                assert stop.code == 0 and "--help" in argv, f"{page}: poison-jax {' '.join(argv)}"
    capsys.readouterr()


def test_a_dry_run_prints_the_config_and_runs_nothing(tmp_path, capsys):
    from poison_jax.face import cli

    out = tmp_path / "never"
    argv = ["run", "--preset", "digits-lr", "--set", "sweep.num_seeds=3", "--out", str(out), "--dry-run"]
    assert cli.main(argv) == 0
    printed = capsys.readouterr().out
    assert any(line.split()[:2] == ["sweep.num_seeds", "3"] for line in printed.splitlines())
    assert f"results would go to: {out}" in printed and not out.exists()
    assert cli.main(["run", "--preset", "digits-lr", "--set", "sweep.num_seedz=3", "--dry-run"]) == 2
    assert "num_seedz" in capsys.readouterr().err


@pytest.mark.parametrize("page", sorted(p.relative_to(PAGES).as_posix() for p in PAGES.rglob("*.md")))
def test_links_of_a_page_resolve_from_where_it_lies(page):
    """Relative links resolve as on GitHub (from docs/pages/); the site's hook follows the same paths."""
    for target in local_links(PAGES / page):
        path = target.partition("#")[0]
        assert (PAGES / path).exists(), f"docs/pages/{page} links {target}, which does not exist"


# What moved out of README.md, and the page that must now hold it (a heading or a command).
MOVED = {
    "getting-started.md": [
        "## What the demo shows",
        TEST_COMMAND,
        'python -m pytest -q -m "not slow"',
        "../demo/figures/error_vs_fraction.png",
        "../demo/figures/attack_objective.png",
    ],
    "how-to-choose.md": [
        "## Hypergradient: RMD, IFT or Implicit",
        "### Inner solver: Newton-CG, L-BFGS or dense Newton",
        "#### Which solver where",
        "### Checkpointing",
        "## Poison modes: replace or add",
        "## Outer step rules",
        "## Victims: SGD or converged",
        "## Penalties: L2, L1, elastic-net",
        "## Losses: logistic, smoothed hinge, squared",
        "## Two classes or more",
        "## The bilevel engine from Python",
        "## The poisoning floor from Python",
        "poison-jax run --preset mnist5k-lr-strong",
    ],
    "faq.md": [
        "log λ",
        "/ n_train",
        "∇_w L(w*) = 0",
        "*truncated* problem",
    ],
    "experiments.md": [
        "## Running experiments",
        "### Presets",
        "### Changing a field: `--set`",
        "### Output folders and resume",
        "### The results store",
        "## Diagnostics: did the inner problem converge?",
        "## RMD and IFT side by side",
        "## Reliability",
        "## Running at scale",
        "--coordinator host0:12355",
    ],
    "results.md": [
        "### Against secml, on secml's own ground",
        "python -m benchmarks.secml_h2h --out docs/benchmarks",
        "### Against JAX's bilevel tools",
        "python -m benchmarks.engine_peers",
        "## The paper's sweep under the strong attack",
        "python -m benchmarks.sweeps --out docs/benchmarks",
        "### Penalties: L1 and elastic-net",
        "### A linear SVM",
        "### Ridge regression: regression poisoning on diabetes",
        "### Multiclass: ten classes",
        "### The paper's neural network offline: mnist5k-mlp",
        "../beyond/mnist5k10-lr/figures/per_class.png",
    ],
    "performance.md": [
        "## Goals",
        "python -m benchmarks --out docs/benchmarks",
        "## One hypergradient",
        "## Seeds: vmapped, sharded, in lanes or looped",
        "## Fast on every device: compiling, seeds, settings, solvers and the GPU",
        "python -m benchmarks.kernel_launches --out docs/benchmarks",
        "## Against PyTorch",
        "## On a GPU (NVIDIA H200, lent for one session)",
    ],
}


@pytest.mark.parametrize("page", sorted(MOVED))
def test_the_guide_moved_out_of_the_readme_is_on_its_page(page):
    text = page_text(page)
    missing = [item for item in MOVED[page] if item not in text]
    assert not missing, f"docs/pages/{page} lacks {missing}"


def test_every_results_table_and_figure_comes_with_the_command_that_produced_it():
    """Each section of results.md that shows a table or a figure names the command that made it."""
    sections = re.split(r"^#{2,} .*$", "\n".join(outside_fences(page_text("results.md"))), flags=re.M)
    blocks = re.split(r"^#{2,} .*$", page_text("results.md"), flags=re.M)
    assert len(sections) == len(blocks) > 10
    for shown, whole in zip(sections, blocks, strict=True):
        if re.search(r"^\|.*\|$|^!\[", shown, flags=re.M):
            assert re.search(r"poison-jax (?:run|demo)|python -m benchmarks", whole), shown[:300]


# -- the site -------------------------------------------------------------------------------------


@pytest.mark.slow
def test_the_site_builds_strictly_with_the_guide_and_the_generated_pages(tmp_path):
    site = tmp_path / "site"
    done = subprocess.run(
        ["bash", str(ROOT / "docs" / "build_docs.sh"), str(site)], capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    pages = set(GUIDE) | {p.relative_to(PAGES).as_posix() for p in PAGES.rglob("*.md")}
    for page in pages:  # the listed ones and any other hand-written page
        assert (site / ("index.html" if page == "index.md" else f"{page[:-3]}/index.html")).is_file(), page
    # repository files the pages link are in the site, and the links point at them
    assert (site / "demo" / "figures" / "error_vs_fraction.png").is_file()
    assert 'src="../demo/figures/error_vs_fraction.png"' in (site / "getting-started" / "index.html").read_text()
    assert (site / "beyond" / "mnist5k10-lr" / "figures" / "per_class.png").is_file()
    assert "0.1.0" in (site / "changelog" / "index.html").read_text()
    # the generated sections: one page per benchmark table, notebook and public module
    for table in (ROOT / "docs" / "benchmarks").glob("*.md"):
        assert (site / "benchmarks" / table.stem / "index.html").is_file(), table.name
    for notebook in (ROOT / "notebooks").glob("*.ipynb"):
        assert (site / "notebooks" / notebook.stem / "index.html").is_file(), notebook.name
    modules = [p.relative_to(ROOT / "poison_jax").with_suffix("") for p in (ROOT / "poison_jax").rglob("*.py")]
    public = [m for m in modules if not any(part.startswith("_") for part in m.parts)]
    assert {m.parts[0] for m in public} >= {"poisoning", "experiments", "face"}, public
    for module in public:  # poison_jax/poisoning/attack.py -> api/poisoning/attack/
        assert (site / "api" / module / "index.html").is_file(), module
    engine = (site / "api" / "engine" / "index.html").read_text(encoding="utf-8")
    assert 'id="poison_jax.engine.hypergrad"' in engine  # the engine's flat names, on one page
    # a name is documented once: each object's heading is on one page of the reference
    seen: dict[str, str] = {}
    for page in sorted((site / "api").rglob("index.html")):
        for anchor in set(re.findall(r'<h\d id="(poison_jax\.[\w.]+)"', page.read_text(encoding="utf-8"))):
            where = page.relative_to(site).as_posix()
            assert anchor not in seen, f"{anchor} is documented on {seen[anchor]} and {where}"
            seen[anchor] = where
    assert "poison_jax.poisoning.attack.run_attack" in seen and "poison_jax.experiments.sweep.run_sweep" in seen
