#!/usr/bin/env bash
# Build the documentation site (mkdocs.yml) with warnings as errors: `mkdocs build --strict`.
# Needs the docs extra: pip install -e ".[docs]"
# Usage: bash docs/build_docs.sh [SITE_DIR]      (default: site/ in the repository root, git-ignored)
# The guide's pages are hand-written (docs/pages/*.md); docs/pages/hooks.py generates the rest at
# build time (changelog, benchmark tables, notebooks, API reference). Nothing is written into the
# work tree except SITE_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."
export NO_MKDOCS_2_WARNING=1  # mkdocs-material's banner about MkDocs 2.0 / its end of life
exec python -m mkdocs build --strict --site-dir "${1:-site}"
