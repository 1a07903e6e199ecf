"""MkDocs hook that completes the documentation site at build time (see mkdocs.yml).

The guide is written by hand: the Markdown pages in ``docs/pages/`` (mkdocs' ``docs_dir``), in the
order of mkdocs.yml's ``nav`` (a page it does not list is added at the end of its Guide section).
This hook adds what is generated from the repository, and writes nothing into it:

* **Links of the hand-written pages** -- a page links repository files the way GitHub resolves them
  from ``docs/pages/`` (``../demo/figures/x.png``, ``../benchmarks/peer.md``,
  ``../../notebooks/quickstart.ipynb``, ``../../CHANGELOG.md``), so the pages read the same on
  GitHub. Here each such file is put into the site (a figure is copied; a benchmark table,
  notebook or the changelog is the page generated for it) and the link rewritten to it; code spans
  that name such a file (```docs/benchmarks/peer.md```) become links to it.
* **Changelog** -- ``CHANGELOG.md`` at the repository root, as the page ``changelog.md``.
* **Benchmarks** -- one page for each ``docs/benchmarks/*.md`` table (with its figure and JSON,
  when there are), and an overview listing every committed file.
* **Notebooks** -- ``notebooks/*.ipynb`` rendered by mkdocs-jupyter *without executing them*
  (they are committed without outputs); a note saying so is put under each rendered page's title.
* **API reference** -- one page ``::: poison_jax.FOLDER.MODULE`` for every public module of
  ``poison_jax/`` (found at build time; no component of its name starts with ``_``), grouped by
  floor folder (``engine/``, ``poisoning/``, ``experiments/``, ``face/``). The engine is one page of
  flat names, kept in private modules; a name is documented on the page of the public module that
  exports it, once (a name documented twice is a warning, so the strict build fails).

The navigation of the generated sections is built here too and appended to mkdocs.yml's ``nav``,
so a new benchmark table, notebook or module appears without editing mkdocs.yml.
"""

from __future__ import annotations

import ast
import json
import logging
import os
import posixpath
import re
from html import escape as html_escape
from pathlib import Path

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.plugins import event_priority
from mkdocs.structure.files import File, Files

log = logging.getLogger("mkdocs.hooks.poison_jax")

PACKAGE = "poison_jax"

# The floors of poison_jax, one folder each (its design: each floor imports only the floors below it).
FLOORS = {
    "engine": "Floor 0: engine",
    "poisoning": "Floor 1: poisoning",
    "experiments": "Floor 2: experiments",
    "face": "Floor 3: face",
}
OTHER_FLOOR = "Other modules"

# Titles and producing commands of the committed benchmark tables (docs/benchmarks/NAME.md).
BENCHMARKS = {
    "summary": ("Goals (summary)", "python -m benchmarks --out docs/benchmarks"),
    "hypergrad": ("One hypergradient", "python -m benchmarks.hypergrad"),
    "accuracy": ("Accuracy against the exact hypergradient", "python -m benchmarks.accuracy"),
    "attack_step": ("One hyperiteration of Algorithm 1", "python -m benchmarks.attack_step"),
    "batching": ("Seeds: vmapped, sharded, in lanes or looped", "python -m benchmarks.batching"),
    "sweeps": ("The mnist5k sweeps, whole commands", "python -m benchmarks.sweeps --out docs/benchmarks"),
    "scaling": ("Scaling with T, d, n and seeds", "python -m benchmarks.scaling"),
    "peer": ("Against PyTorch", "python -m benchmarks.peer"),
    "engine_peers": ("Against JAX's bilevel tools", "python -m benchmarks.engine_peers --out docs/benchmarks"),
    "secml_h2h": ("Against secml", "python -m benchmarks.secml_h2h --out docs/benchmarks"),
    "progress": ("Progress reports", "python -m benchmarks.progress --out docs/benchmarks"),
    "defences": (
        "Defences: sphere, slab and k-NN on MNIST 1 v 7",
        "python -m benchmarks.defences --out docs/benchmarks",
    ),
    **{
        f"defence_grid_{grid}": (
            f"Defences: {label}",
            f"python -m benchmarks.defence_grid --grid {grid} --out docs/benchmarks",
        )
        for grid, label in (
            ("mnist17-lr", "MNIST 1 v 7, logistic, the other defences"),
            ("mnist17-svm", "MNIST 1 v 7, smoothed hinge"),
            ("digits-lr", "digits, logistic"),
            ("digits-svm", "digits, smoothed hinge"),
            ("ridge", "ridge regression, TRIM and SEVER"),
        )
    },
    "defence_costs": ("Defences: what each costs", "python -m benchmarks.defences --costs-only --out docs/benchmarks"),
    "lambda_failure": ("Where learned λ fails", "python -m benchmarks.lambda_failure --out docs/benchmarks"),
}

NOTEBOOK_NOTE = (
    '<div class="admonition note"><p class="admonition-title">Rendered without execution</p>'
    "<p>This page shows <code>{path}</code> as committed, without outputs: the documentation build "
    "does not execute notebooks (<code>execute: false</code>). The test suite executes it top to "
    'bottom with <code>SMALL = True</code>; <a href="{name}" download>download it</a> and run it in '
    "Jupyter to see its output.</p></div>\n"
)

FENCE = re.compile(r"^\s*(```+|~~~+)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
# A Markdown link (its label may hold code spans) or a code span, whichever starts first.
LINK_OR_CODE = re.compile(r"(?P<label>!?\[(?:[^\]`]|`[^`]*`)*\])\((?P<target>[^)\s]+)\)|(?P<code>`+[^`]+?`+)")

_state: dict = {}


# --------------------------------------------------------------------------- helpers


def outside_fences(lines: list[str]):
    """Yield ``(index, line, in_fence)`` for every line."""
    fence = None
    for i, line in enumerate(lines):
        m = FENCE.match(line)
        if m:
            marker = m.group(1)
            if fence is None:
                fence = marker[0] * 3
                yield i, line, True
                continue
            if marker.startswith(fence):
                fence = None
                yield i, line, True
                continue
        yield i, line, fence is not None


# --------------------------------------------------------------------------- pages


class Builder:
    def __init__(self, root: Path, docs_dir: Path):
        self.root = root
        self.docs_dir = docs_dir  # the hand-written pages
        self.pages: dict[str, str] = {}  # src_uri -> Markdown
        self.static: dict[str, Path] = {}  # src_uri -> file to copy
        self.notebook_files: dict[str, Path] = {}  # src_uri -> notebook (rendered by mkdocs-jupyter)
        self.repo_map: dict[str, str] = {}  # repository path -> src_uri in the site
        self.handwritten: dict[str, str] = {}  # src_uri -> repository folder its links are relative to
        self.nav: list = []  # the generated sections, appended to mkdocs.yml's nav

    # ---- collection
    def build(self):
        self.handwritten_pages()
        bench_nav = self.benchmarks()
        nb_nav = self.notebooks()
        api_nav = self.api()
        self.changelog()
        for uri, base in self.handwritten.items():  # publish what the pages link to
            self.rewrite_markdown((self.docs_dir / uri).read_text(encoding="utf-8"), uri, base)
        if bench_nav:
            self.nav.append({"Benchmarks": bench_nav})
        if nb_nav:
            self.nav.append({"Notebooks": nb_nav})
        self.nav.append({"API reference": api_nav})

    def handwritten_pages(self):
        base = self.docs_dir.relative_to(self.root).as_posix()
        for f in sorted(self.docs_dir.rglob("*.md")):
            uri = f.relative_to(self.docs_dir).as_posix()
            self.handwritten[uri] = posixpath.normpath(posixpath.join(base, posixpath.dirname(uri)))
            self.repo_map[f"{base}/{uri}"] = uri
        self.repo_map["README.md"] = "index.md"  # the front page's counterpart in the site

    def title(self, uri: str) -> str:
        """A hand-written page's first heading (its file name if it has none)."""
        for _, line, in_fence in outside_fences((self.docs_dir / uri).read_text(encoding="utf-8").splitlines()):
            m = None if in_fence else HEADING.match(line)
            if m:
                return m.group(2)
        return posixpath.splitext(posixpath.basename(uri))[0].replace("-", " ").capitalize()

    def changelog(self):
        path = self.root / "CHANGELOG.md"
        if not path.is_file() or "changelog.md" in self.handwritten:
            return
        self.repo_map["CHANGELOG.md"] = "changelog.md"
        self._changelog = path

    def finish(self):
        """Pages whose text needs every published file known (rewritten links)."""
        path = getattr(self, "_changelog", None)
        if path is not None:
            self.pages["changelog.md"] = self.rewrite_markdown(path.read_text(encoding="utf-8"), "changelog.md", "")

    def rewrite_markdown(self, text: str, page: str, base: str) -> str:
        """``text`` of site page ``page`` with its links rewritten (:meth:`rewrite`), fenced code left alone.

        ``base``: the repository folder that the links of the text are relative to.
        """
        out: list[str] = []
        chunk: list[str] = []  # consecutive lines outside fenced code, rewritten together
        for _, line, in_fence in outside_fences(text.splitlines()):
            if in_fence:
                if chunk:
                    out.append(self.rewrite("\n".join(chunk), page, base))
                    chunk = []
                out.append(line)
                continue
            chunk.append(line)
        if chunk:
            out.append(self.rewrite("\n".join(chunk), page, base))
        return "\n".join(out).strip() + "\n"

    def rewrite(self, text: str, page: str, base: str) -> str:
        """Links to repository files, and code spans naming a published file, rewritten for site page ``page``.

        A link is resolved from the repository folder ``base``; a link to a page of the site itself,
        to an anchor of this page or to another site is left as it is (for --strict to check).
        """

        def rel(uri: str) -> str:
            return posixpath.relpath(uri, posixpath.dirname(page))

        def link(label: str, target: str) -> str | None:
            if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, mailto:, ...
                return None
            path, _, anchor = target.partition("#")
            if not path:  # an anchor of this page
                return None
            uri = self.publish(posixpath.join(base, path))
            return None if uri is None else f"{label}({rel(uri)}{'#' + anchor if anchor else ''})"

        def replace(m: re.Match) -> str:
            if m.group("label") is not None:
                return link(m.group("label"), m.group("target")) or m.group(0)
            uri = self.publish(m.group("code").strip("`"), only_known=True)
            return m.group(0) if uri is None else f"[{m.group(0)}]({rel(uri)})"

        return LINK_OR_CODE.sub(replace, text)

    def publish(self, path: str, only_known: bool = False) -> str | None:
        """The site's ``src_uri`` of repository file ``path``, adding the file to the site if needed.

        ``only_known``: only files already published (benchmark outputs, notebooks, linked files).
        """
        path = path.removeprefix("./")
        if not path or path.startswith("/") or " " in path:
            return None
        path = posixpath.normpath(path)
        if path.startswith("../") or path == "..":
            return None
        if path in self.repo_map:
            return self.repo_map[path]
        full = self.root / path
        if only_known or not full.is_file():
            return None
        if full.suffix == ".md":  # a Markdown file that is no page of the site: left for --strict
            return None
        uri = path.removeprefix("docs/")  # any other repository file: copied, docs/ dropped
        self.static[uri] = full
        self.repo_map[path] = uri
        return uri

    def benchmarks(self) -> list:
        folder = self.root / "docs" / "benchmarks"
        if not folder.is_dir():
            return []
        order = list(BENCHMARKS)
        tables = sorted(
            folder.glob("*.md"), key=lambda p: (order.index(p.stem) if p.stem in order else len(order), p.stem)
        )
        for f in sorted(folder.iterdir()):
            if f.is_file() and f.suffix != ".md":
                uri = f"benchmarks/{f.name}"
                self.static[uri] = f
                self.repo_map[f"docs/benchmarks/{f.name}"] = uri
        nav = [{"Overview": "benchmarks/index.md"}]
        rows = []
        for f in tables:
            default = (f.stem.replace("_", " ").capitalize(), f"python -m benchmarks.{f.stem}")
            title, command = BENCHMARKS.get(f.stem, default)
            uri = f"benchmarks/{f.stem}.md"
            self.repo_map[f"docs/benchmarks/{f.name}"] = uri
            body = f.read_text(encoding="utf-8").strip()
            first = body.splitlines()[0] if body else ""
            m = HEADING.match(first)
            if m and len(m.group(1)) == 1:  # the file has its own title: kept as a subtitle
                if f.stem not in BENCHMARKS:
                    title = m.group(2)
                rest = "\n".join(body.splitlines()[1:]).strip()
                body = rest if title == m.group(2) else f"## {m.group(2)}\n\n{rest}"
            extras = []
            if (folder / f"{f.stem}.png").is_file():
                extras.append(f"![{title}]({f.stem}.png)")
            if (folder / f"{f.stem}.json").is_file():
                extras.append(f"All figures of this run, with its environment: [`{f.stem}.json`]({f.stem}.json).")
            about = (
                f"`docs/benchmarks/{f.name}`, as committed; written by `{command}`. What the numbers "
                "mean is discussed on the guide's [Performance](../performance.md), "
                "[Results](../results.md) and [Defences: results](../defence-results.md) pages."
            )
            self.pages[uri] = "\n\n".join([f"# {title}", about, body, *extras]) + "\n"
            nav.append({title: uri})
            rows.append(f"| [{title}]({f.stem}.md) | `docs/benchmarks/{f.name}` | `{command}` |")
        others = [
            f"- [`{f.name}`]({f.name})"
            for f in sorted(folder.glob("*.json"))
            if not (folder / f"{f.stem}.md").is_file()
        ]
        about = (
            "The benchmark outputs committed in `docs/benchmarks/`, shown as they are: each table was "
            "written by a stand-alone script of `benchmarks/` (`python -m benchmarks` runs the suite). "
            "The machine, versions and raw timings of every run are in the JSON file beside each table."
        )
        parts = ["# Benchmarks", about, "| table | file | written by |\n|---|---|---|\n" + "\n".join(rows)]
        if others:
            parts.append("Results with no table of their own (raw JSON):\n\n" + "\n".join(others))
        self.pages["benchmarks/index.md"] = "\n\n".join(parts) + "\n"
        return nav

    def notebooks(self) -> list:
        folder = self.root / "notebooks"
        notebooks = sorted(folder.glob("*.ipynb")) if folder.is_dir() else []
        if not notebooks:
            return []
        order = ["quickstart", "paper_figures"]
        notebooks.sort(key=lambda p: (order.index(p.stem) if p.stem in order else 99, p.stem))
        nav = [{"About the notebooks": "notebooks/index.md"}]
        listing = []
        for nb_path in notebooks:
            nb = json.loads(nb_path.read_text(encoding="utf-8"))
            title = nb_path.stem.replace("_", " ").capitalize()
            for cell in nb.get("cells", []):
                if cell.get("cell_type") == "markdown":
                    src = "".join(cell.get("source", []))
                    m = HEADING.match(src.strip().splitlines()[0]) if src.strip() else None
                    if m:
                        title = m.group(2)
                    break
            uri = f"notebooks/{nb_path.name}"
            self.notebook_files[uri] = nb_path
            self.repo_map[f"notebooks/{nb_path.name}"] = uri
            nav.append({title: uri})
            listing.append(f"- [{title}]({nb_path.name}) (`notebooks/{nb_path.name}`)")
        readme = folder / "README.md"
        intro = readme.read_text(encoding="utf-8").strip().splitlines() if readme.is_file() else []
        if intro and intro[0].startswith("# "):
            intro = intro[1:]
        note = (
            "The pages here render the notebooks **without executing them** (`execute: false` in "
            "mkdocs.yml): they are committed without outputs, so code cells show no output. The test "
            "suite (`tests/test_notebooks.py`) executes them top to bottom with `SMALL = True`; run them "
            "in Jupyter to see their figures."
        )
        parts = ["# Notebooks", "\n".join(intro).strip(), "\n".join(listing), note]
        self.pages["notebooks/index.md"] = "\n\n".join(p for p in parts if p) + "\n"
        return nav

    def api(self) -> list:
        """The API reference: a page for each public module that documents names, grouped by floor folder.

        A module is public when no component of its dotted name starts with ``_``. Its page renders
        the names of its ``__all__`` that it defines or takes from a private module (whose public
        path it is, e.g. ``poison_jax.engine.hypergrad`` from ``engine/_bilevel.py``); a floor folder
        that only gathers modules (``poison_jax.poisoning``) is rendered on the overview, above the
        table of its modules. A name documented on two pages is a warning (so --strict fails).
        """
        pkg_dir = self.root / PACKAGE
        self._modules = {}
        for path in sorted(pkg_dir.rglob("*.py")):
            parts = path.relative_to(self.root).with_suffix("").parts
            dotted = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            self._modules[dotted] = ModuleInfo(path, dotted)
        for info in self._modules.values():
            info.resolve(self._modules)
        public = [m for m in self._modules if m != PACKAGE and is_public(m)]
        self._pages = {m: api_uri(m) for m in public if self._modules[m].members() or not self._modules[m].package}
        self._homes: dict[tuple[str, str], str] = {}  # (defining module, name) -> module whose page documents it
        for m in self._pages:
            for name in self._modules[m].members():
                origin = self.origin(m, name)
                if origin in self._homes:
                    log.warning(
                        "API reference: %s.%s is documented twice, as %s.%s and %s.%s: give it one public path",
                        origin[0], origin[1], self._homes[origin], origin[1], m, name,
                    )  # fmt: skip
                self._homes[origin] = m
        groups: dict[str, list[str]] = {}
        for m in public:
            top = m.split(".")[1]
            groups.setdefault(top if top in FLOORS else "", []).append(m)
        if groups.get(""):
            log.info(
                "API reference: modules in no floor folder, listed under '%s': %s", OTHER_FLOOR, ", ".join(groups[""])
            )
        about = (
            f"Built from the docstrings of `{PACKAGE}`, one page a public module, grouped by the floor "
            "folders of the design: each floor imports only the floors below it. A page documents what "
            "its module defines, and the names it takes from private modules (`_name.py`), whose public "
            "path it is: every name has one."
        )
        index = ["# API reference", about, f"## The package `{PACKAGE}`", render(PACKAGE, None, heading=False)]
        nav: list = [{"Overview": "api/index.md"}]
        for top in [*FLOORS, ""]:
            mods = groups.get(top, [])
            if not mods:
                continue
            title = FLOORS.get(top, OTHER_FLOOR)
            section = [f"## {title}"]
            folder = f"{PACKAGE}.{top}"
            if folder in mods and folder not in self._pages:  # a folder of modules: its docstring here
                section.append(render(folder, None, heading_level=3))
            rows = [
                f"| [`{m}`]({posixpath.relpath(uri, 'api')}) | {self._modules[m].summary.replace('|', '&#124;')} |"
                for m in mods
                if (uri := self._pages.get(m))
            ]
            section.append("| module | summary |\n|---|---|\n" + "\n".join(rows))
            index.append("\n\n".join(section))
            group = []
            for m in (m for m in mods if m in self._pages):
                info = self._modules[m]
                page = render(m, info.members())
                if info.reexported():
                    page += "\n" + self.reexports(m, "Also exported by this module") + "\n"
                self.pages[self._pages[m]] = page
                label = m.removeprefix(folder + ".") if m != folder else top
                group.append({label: self._pages[m]})
            nav.append({title: group})
        if self._modules[PACKAGE].reexported():
            index.append(self.reexports(PACKAGE, f"`import {PACKAGE}` also gives"))
        self.pages["api/index.md"] = "\n\n".join(index) + "\n"
        return nav

    def origin(self, module: str, name: str, depth: int = 0) -> tuple[str, str]:
        """Where ``module.name`` is defined: its imports followed to the module that defines it."""
        info = self._modules.get(module)
        if info is None or depth > 10 or name not in info.imported:
            return module, name
        source, original = info.imported[name]
        return (source, "") if original is None else self.origin(source, original, depth + 1)

    def reexports(self, module: str, heading: str) -> str:
        """A table of the names ``module`` re-exports from other public modules, linked to their docs."""
        info = self._modules[module]
        page = self._pages.get(module, "api/index.md")
        rows = []
        for name in info.reexported():
            source, original = self.origin(module, name)
            if not original:  # a module
                where = self._pages.get(source)
                link = f"[`{source}`]({posixpath.relpath(where, posixpath.dirname(page))})" if where else f"`{source}`"
                rows.append(f"| `{name}` | module | {link} |")
                continue
            home = self._homes.get((source, original))
            if home is None:
                rows.append(f"| `{name}` | {self._modules[source].kind(original)} | `{source}` |")
                continue
            target = posixpath.relpath(self._pages[home], posixpath.dirname(page))
            label = f"[`{name}`][{home}.{original}]" if self._modules[source].documented(original) else f"`{name}`"
            rows.append(f"| {label} | {self._modules[source].kind(original)} | [`{home}`]({target}) |")
        return (
            (f"## {heading}\n\n" if heading.startswith("Also") else f"{heading}:\n\n")
            + "| name | kind | documented in |\n|---|---|---|\n"
            + "\n".join(rows)
        )


def is_public(module: str) -> bool:
    return not any(part.startswith("_") for part in module.split("."))


def api_uri(module: str) -> str:
    """``poison_jax.poisoning.attack`` -> ``api/poisoning/attack.md``."""
    return "api/" + "/".join(module.split(".")[1:]) + ".md"


def render(module: str, members: list[str] | None, heading: bool = True, heading_level: int | None = None) -> str:
    """A mkdocstrings block rendering ``module`` with ``members`` (``None``: the module's docstring only)."""
    options = ["members:", *(f"  - {n}" for n in members)] if members else ["members: false"]
    if not heading:
        options += ["show_root_heading: false", "show_root_toc_entry: false"]
    if heading_level is not None:
        options.append(f"heading_level: {heading_level}")
    return f"::: {module}\n    options:\n" + "".join(f"      {o}\n" for o in options)


class ModuleInfo:
    """What a module of the package defines, imports from the package and exports (read with ast)."""

    def __init__(self, path: Path, dotted: str):
        self.name = dotted
        self.package = path.name == "__init__.py"
        self.tree = ast.parse(path.read_text(encoding="utf-8"))
        doc = ast.get_docstring(self.tree) or ""
        summary = " ".join(doc.strip().split("\n\n")[0].split())
        # reST roles as code spans (``~`` keeps the last component, as in Sphinx)
        self.summary = re.sub(
            r":[a-z]+:`(~?)([^`]+)`",
            lambda m: f"`{m.group(2).rsplit('.', 1)[-1] if m.group(1) else m.group(2)}`",
            summary,
        )
        self.defined: dict[str, ast.AST] = {}
        self.docs: set[str] = set()
        self._from: dict[str, tuple[str, str]] = {}  # local name -> (module, imported name)
        self.imported: dict[str, tuple[str, str | None]] = {}  # name -> (module, name or None: a module)
        self.all: list[str] | None = None
        base = dotted.split(".") if self.package else dotted.split(".")[:-1]
        body = self.tree.body
        for i, node in enumerate(body):
            names = []
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names = [node.name]
                if ast.get_docstring(node):
                    self.docs.add(node.name)
            elif isinstance(node, (ast.Assign, ast.AnnAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                names = [t.id for t in targets if isinstance(t, ast.Name)]
                following = body[i + 1] if i + 1 < len(body) else None
                if (
                    isinstance(following, ast.Expr)
                    and isinstance(following.value, ast.Constant)
                    and isinstance(following.value.value, str)
                ):
                    self.docs.update(names)
                if "__all__" in names:
                    try:
                        self.all = list(ast.literal_eval(node.value))
                    except ValueError:
                        self.all = None
            elif isinstance(node, ast.ImportFrom):
                parts = (base[: len(base) - node.level + 1] if node.level else []) + (
                    node.module.split(".") if node.module else []
                )
                mod = ".".join(parts)
                if mod == PACKAGE or mod.startswith(PACKAGE + "."):
                    for alias in node.names:
                        self._from[alias.asname or alias.name] = (mod, alias.name)
            for name in names:
                self.defined.setdefault(name, node)

    def resolve(self, modules: dict[str, ModuleInfo]) -> None:
        """Tell the imported modules from the imported names, knowing every module of the package."""
        for local, (mod, name) in self._from.items():
            sub = f"{mod}.{name}"
            self.imported[local] = (sub, None) if sub in modules else (mod, name)

    def public(self) -> list[str]:
        if self.all is not None:
            return list(self.all)
        return [n for n in self.defined if not n.startswith("_")]

    def members(self) -> list[str]:
        """What the module's page documents: its own names, and those it takes from a private module
        (``engine/_bilevel.py``), whose public path is this module. Not its submodules."""
        out = []
        for n in self.public():
            source = self.imported.get(n)
            if source is None or (source[1] is not None and not is_public(source[0])):
                out.append(n)
        return out

    def reexported(self) -> list[str]:
        """The names of ``__all__`` it imports from other public modules (none is an alias: a module)."""
        out = []
        for n in self.public():
            source = self.imported.get(n)
            if source is not None and (source[1] is None or is_public(source[0])):
                if source[1] is None and source[0] == f"{self.name}.{n}":
                    continue  # a floor folder's own submodule: in the navigation
                out.append(n)
        return out

    def documented(self, name: str) -> bool:
        return name in self.docs

    def kind(self, name: str) -> str:
        node = self.defined.get(name)
        if isinstance(node, ast.ClassDef):
            return "class"
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            return "function"
        return "attribute" if node is not None else "name"


# --------------------------------------------------------------------------- MkDocs events


def on_config(config: MkDocsConfig) -> MkDocsConfig:
    root = Path(config.config_file_path).resolve().parent
    builder = Builder(root, Path(config.docs_dir).resolve())
    builder.build()
    builder.finish()
    _state["builder"] = builder
    config.nav = with_unlisted_pages(config.nav, builder) + builder.nav
    config.watch.extend(str(root / p) for p in ("CHANGELOG.md", "notebooks", "docs/benchmarks", PACKAGE))
    return config


def nav_files(nav) -> set[str]:
    """The ``src_uri`` of every page a navigation (mkdocs.yml's ``nav`` form) lists."""
    if isinstance(nav, str):
        return {nav}
    if isinstance(nav, dict):
        return set().union(*(nav_files(v) for v in nav.values()))
    if isinstance(nav, list):
        return set().union(*(nav_files(v) for v in nav))
    return set()


def with_unlisted_pages(nav, builder: Builder) -> list:
    """mkdocs.yml's ``nav`` with every hand-written page it leaves out added to its Guide section.

    A new page of docs/pages/ then appears without editing mkdocs.yml (at the end of the Guide, titled
    by its first heading); its place among the others is set by listing it in mkdocs.yml.
    """
    nav = list(nav or [{"Home": "index.md"}])
    unlisted = [uri for uri in builder.handwritten if uri not in nav_files(nav)]
    if not unlisted:
        return nav
    log.info("pages not listed in mkdocs.yml's nav, added to its Guide: %s", ", ".join(unlisted))
    entries = [{builder.title(uri): uri} for uri in unlisted]
    for i, item in enumerate(nav):
        if isinstance(item, dict) and isinstance(item.get("Guide"), list):
            nav[i] = {"Guide": item["Guide"] + entries}
            return nav
    return nav + [{"Guide": entries}]


@event_priority(50)  # before mkdocs-jupyter, which must see the notebooks among the files
def on_files(files: Files, config: MkDocsConfig) -> Files:
    builder: Builder = _state["builder"]
    for uri, text in builder.pages.items():
        files.append(File.generated(config, uri, content=text))
    for uri, path in builder.static.items():
        files.append(File.generated(config, uri, abs_src_path=os.fspath(path)))
    for uri in builder.notebook_files:
        # a file with a real src_dir: mkdocs-jupyter reads the notebook from File.abs_src_path
        files.append(
            File(
                uri,
                src_dir=os.fspath(builder.root),
                dest_dir=config.site_dir,
                use_directory_urls=config.use_directory_urls,
            )
        )
    return files


def on_page_markdown(markdown: str, page, config: MkDocsConfig, files: Files) -> str:
    builder: Builder = _state["builder"]
    base = builder.handwritten.get(page.file.src_uri)
    return markdown if base is None else builder.rewrite_markdown(markdown, page.file.src_uri, base)


def on_page_content(html: str, page, config: MkDocsConfig, files: Files) -> str:
    path = _state["builder"].notebook_files.get(page.file.src_uri)
    if path is None:
        return html
    # mkdocs-jupyter (include_source) copies the notebook beside the page
    note = NOTEBOOK_NOTE.format(
        path=html_escape(path.relative_to(_state["builder"].root).as_posix()), name=html_escape(path.name)
    )
    at = html.find("</h1>")
    return html[: at + 5] + note + html[at + 5 :] if at >= 0 else note + html
