#!/usr/bin/env python3
"""Set up and run Modelyard, or run its tests, with nothing but Python 3.11.

    python3 dev.py start   # virtualenv, install, migrate, registry sync, first superuser, run
    python3 dev.py test    # virtualenv, install, then pytest (extra arguments go to pytest)

Standard library only: this runs before anything is installed.
"""

import hashlib
import os
import re
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = Path(os.environ.get("MODELYARD_VENV", ROOT / ".venv"))
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PYTHON = BIN / "python"
STAMP = VENV / ".modelyard-installed"
# llama.cpp's CPU backend is built for the machine it runs on (-march=native), except AMX:
# its AMX matrix kernels crash the process (SIGSEGV in ggml_backend_amx_mul_mat) on virtual
# machines whose CPU reports AMX without giving processes the tile state (seen on the
# Firecracker VMs Modelyard is developed on). AVX-512 and AVX2 stay.
NO_AMX = "-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
LLAMA_CMAKE_ARGS = f'-DCMAKE_C_FLAGS="{NO_AMX}" -DCMAKE_CXX_FLAGS="{NO_AMX}"'
# Built once per machine and kept outside the checkout: a fresh clone installs it in seconds.
WHEELS = Path(os.environ.get("MODELYARD_WHEELS", Path.home() / ".cache" / "modelyard" / "wheels"))


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
    pyproject = (ROOT / "pyproject.toml").read_text()
    wanted = hashlib.sha256((pyproject + LLAMA_CMAKE_ARGS).encode()).hexdigest()
    if STAMP.exists() and STAMP.read_text().strip() == wanted:
        return
    env = dict(os.environ)
    check(PYTHON, "-m", "pip", "install", "--quiet", "--upgrade", "pip", env=env)
    wheels = llama_wheel(pyproject, env)
    pip_install = [PYTHON, "-m", "pip", "install", "--quiet", "--find-links", wheels]
    check(*pip_install, "-e", ".[dev]", env=env)
    STAMP.write_text(wanted)


def llama_wheel(pyproject: str, env: dict) -> Path:
    """Build llama-cpp-python's wheel with LLAMA_CMAKE_ARGS (once), install it; return its folder.

    pip's own wheel cache does not know build flags (it would hand back a wheel built
    without them), so the wheel is built with the cache off, into a folder named by the
    requirement and the flags.
    """
    spec = re.search(r'"llama-cpp-python(?:\[[^\]]*\])?([^"]*)"', pyproject).group(1)
    requirement = f"llama-cpp-python{spec}"
    tag = hashlib.sha256((requirement + LLAMA_CMAKE_ARGS).encode()).hexdigest()[:12]
    folder = WHEELS / f"llama-cpp-python-{tag}"
    built = sorted(folder.glob("llama_cpp_python-*.whl"))
    if not built:
        print(f"Building llama-cpp-python (about 6 minutes, once) into {folder}", flush=True)
        build_env = dict(env, CMAKE_ARGS=LLAMA_CMAKE_ARGS)
        build_env.setdefault("CMAKE_BUILD_PARALLEL_LEVEL", str(os.cpu_count() or 2))
        check(
            PYTHON,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-cache-dir",
            "--no-binary",
            "llama-cpp-python",
            "-w",
            folder,
            requirement,
            env=build_env,
        )
        built = sorted(folder.glob("llama_cpp_python-*.whl"))
    check(
        PYTHON,
        "-m",
        "pip",
        "install",
        "--quiet",
        "--no-deps",
        "--force-reinstall",
        built[-1],
        env=env,
    )
    return folder


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
