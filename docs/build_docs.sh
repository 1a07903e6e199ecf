#!/usr/bin/env bash
# Build the documentation site (mkdocs.yml) with warnings as errors: `mkdocs build --strict`.
# Needs the docs extra: pip install -e ".[docs]"
# Usage: bash docs/build_docs.sh [SITE_DIR]      (default: site/ in the repository root, git-ignored)
# Every page is generated at build time by docs/pages/hooks.py; nothing is written into the work
# tree except SITE_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."
export NO_MKDOCS_2_WARNING=1  # mkdocs-material's banner about MkDocs 2.0 / its end of life
exec python -m mkdocs build --strict --site-dir "${1:-site}"
