"""Create the virtualenv that secml's reference poisoning attack runs in (stdlib only).

    python benchmarks/secml_env.py [PATH]      # default benchmarks/results/secml-venv

secml 0.13.post1 is the newest release that installs on Python 3.11; its metadata pins packages the
attack never uses (matplotlib ~=3.0), so it is installed with ``--no-deps`` and its real
dependencies are pinned in one further ``pip install`` (installing mlxtend alone would upgrade numpy
to 2.x and break secml). Prints the venv's python executable.
"""

from __future__ import annotations

import argparse
import subprocess
from pathlib import Path

DEFAULT_PATH = Path(__file__).resolve().parent / "results" / "secml-venv"
SECML = "secml==0.13.post1"
DEPENDENCIES = (
    "numpy==1.26.4",
    "scipy==1.11.4",
    "scikit-learn==1.3.2",
    "mlxtend",
    "pandas<2.3",
    "joblib",
    "Pillow",
    "requests",
    "python-dateutil",
)
# secml calls scipy.linalg.pinv2 (gone since SciPy 1.9) on a rare path, and writes ~/secml-data on import.
_CHECK = (
    "import os, tempfile, scipy.linalg; scipy.linalg.pinv2 = scipy.linalg.pinv; "
    "os.environ.setdefault('SECML_HOME_DIR', tempfile.mkdtemp()); "
    "os.environ.setdefault('SECML_PYTORCH_DIR', tempfile.mkdtemp()); "
    "import secml, mlxtend, sklearn"
)


def _works(python: Path) -> bool:
    """Return whether ``python`` exists and imports secml, mlxtend and scikit-learn."""
    return python.exists() and subprocess.run([str(python), "-c", _CHECK], capture_output=True).returncode == 0


def ensure_secml_venv(path: str | Path = DEFAULT_PATH) -> Path:
    """Create (or reuse, when it already imports secml) the secml virtualenv at ``path``.

    Returns the path of the venv's python executable.
    """
    path = Path(path).resolve()
    python = path / "bin" / "python"
    if _works(python):
        return python
    subprocess.run(["python3.11", "-m", "venv", str(path)], check=True)
    pip = [str(python), "-m", "pip", "install", "--quiet"]
    subprocess.run([*pip, "--no-deps", SECML], check=True)
    subprocess.run([*pip, *DEPENDENCIES], check=True)
    if not _works(python):
        raise RuntimeError(f"the secml venv at {path} was installed but cannot import secml")
    return python


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path", nargs="?", default=DEFAULT_PATH, type=Path)
    print(ensure_secml_venv(parser.parse_args().path))
