#!/usr/bin/env python3
"""Set up and run Modelyard, or run its tests, with nothing but Python 3.11.

    python3 dev.py start   # virtualenv, install, migrate, registry sync, first superuser, run
    python3 dev.py test    # virtualenv, install, then pytest (extra arguments go to pytest)

Standard library only: this runs before anything is installed.
"""

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = Path(os.environ.get("MODELYARD_VENV", ROOT / ".venv"))
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PYTHON = BIN / "python"
STAMP = VENV / ".modelyard-installed"


def run(*cmd, env=None):
    print("+", " ".join(str(c) for c in cmd), flush=True)
    return subprocess.call([str(c) for c in cmd], cwd=ROOT, env=env)


def check(*cmd, env=None):
    code = run(*cmd, env=env)
    if code:
        sys.exit(code)


def ensure_installed():
    """Create the virtualenv and install the project, unless pyproject.toml is unchanged."""
    if sys.version_info < (3, 11):  # noqa: UP036  (this script runs before the venv exists)
        sys.exit(f"Modelyard needs Python 3.11 or newer; this is {sys.version.split()[0]}.")
    if not PYTHON.exists():
        print(f"Creating virtualenv in {VENV}", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    wanted = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if STAMP.exists() and STAMP.read_text().strip() == wanted:
        return
    env = dict(os.environ)
    # llama-cpp-python compiles from source; use both cores. pip caches the wheel.
    env.setdefault("CMAKE_BUILD_PARALLEL_LEVEL", str(os.cpu_count() or 2))
    check(PYTHON, "-m", "pip", "install", "--quiet", "--upgrade", "pip", env=env)
    check(PYTHON, "-m", "pip", "install", "--quiet", "-e", ".[dev]", env=env)
    STAMP.write_text(wanted)


def manage(*args):
    check(PYTHON, "manage.py", *args)


def start(extra):
    ensure_installed()
    manage("migrate", "--no-input")
    manage("ensure_superuser")
    # `run` syncs the registry and reconciles the store before it starts the processes.
    os.execv(PYTHON, [str(PYTHON), "manage.py", "run", *extra])


def test(extra):
    ensure_installed()
    sys.exit(run(PYTHON, "-m", "pytest", *extra))


def main():
    commands = {"start": start, "test": test}
    if len(sys.argv) < 2 or sys.argv[1] not in commands:
        sys.exit(__doc__)
    os.chdir(ROOT)
    commands[sys.argv[1]](sys.argv[2:])


if __name__ == "__main__":
    main()
