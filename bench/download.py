#!/usr/bin/env python
"""Benchmark downloads of a 1 GiB file from the test hub on 127.0.0.1.

    .venv/bin/python bench/download.py [--size-mib 1024] [--runs 3]

Reports throughput (MB/s, median of the runs) for:
  - curl writing the file to disk (the reference),
  - huggingface_hub.hf_hub_download (fresh cache each run),
  - Modelyard's full path: POST /api/v1/models/{key}/download to a live daphne, a qcluster
    worker fetches, hashes and verifies the blob into the store, and the operation reads
    succeeded (timed from the POST to that answer),
plus the worker's peak RSS. Goal (issue 3): Modelyard >= 0.85 x curl and >= hf_hub_download,
peak RSS < 150 MB. The hub server, daphne and the worker are separate processes.
"""

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
REPO = "bench/one-gib"
FILE = "model.safetensors"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"{url} did not answer within {timeout} s")


def start_hub(repos: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen(
        [PY, "tests/hub_server.py", "--root", str(repos), "--port", str(port)],
        cwd=ROOT, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    for line in proc.stdout:
        if "listening on" in line:
            break
    return proc, f"http://127.0.0.1:{port}"


def median_rate(size: int, seconds: list[float]) -> float:
    return size / statistics.median(seconds) / 1e6


def bench_curl(hub: str, size: int, runs: int, tmp: Path) -> list[float]:
    url = f"{hub}/{REPO}/resolve/main/{FILE}"
    times = []
    for _ in range(runs):
        out = tmp / "curl.bin"
        started = time.perf_counter()
        subprocess.run(["curl", "-s", "-f", "-o", str(out), url], check=True)
        times.append(time.perf_counter() - started)
        assert out.stat().st_size == size
        out.unlink()
    return times


def bench_hf(hub: str, size: int, runs: int, tmp: Path) -> list[float]:
    code = (
        "import sys, time\n"
        "from huggingface_hub import hf_hub_download\n"
        "t = time.perf_counter()\n"
        f"hf_hub_download({REPO!r}, {FILE!r}, cache_dir=sys.argv[1], token=False)\n"
        "print(time.perf_counter() - t)\n"
    )
    times = []
    env = dict(os.environ, HF_ENDPOINT=hub, HF_HUB_DISABLE_TELEMETRY="1")
    for i in range(runs):
        cache = tmp / f"hf-{i}"
        out = subprocess.run(
            [PY, "-c", code, str(cache)], env=env, capture_output=True, text=True, check=True
        )
        times.append(float(out.stdout.strip().splitlines()[-1]))
        shutil.rmtree(cache)
    return times


class PeakRss(threading.Thread):
    """Sample the RSS of every process under a root; keep the largest single one."""

    def __init__(self, root_pid: int):
        super().__init__(daemon=True)
        self.root = psutil.Process(root_pid)
        self.peak = 0
        self.stop = threading.Event()

    def run(self):
        while not self.stop.is_set():
            try:
                for p in [self.root, *self.root.children(recursive=True)]:
                    if "qcluster" in " ".join(p.cmdline()):
                        self.peak = max(self.peak, p.memory_info().rss)
            except psutil.Error:
                pass
            time.sleep(0.02)


def api(base: str, token: str, method: str, path: str) -> dict:
    request = urllib.request.Request(
        base + path, method=method, headers={"Authorization": f"Bearer {token}"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def bench_modelyard(hub: str, size: int, runs: int, tmp: Path) -> tuple[list[float], int]:
    env = dict(
        os.environ,
        DATABASE_URL=f"sqlite:///{tmp / 'bench.sqlite3'}",
        MODELS_DIR=str(tmp / "models"),
        LEGACY_HUB_DIR=str(tmp / "no-legacy"),
        HF_ENDPOINT=hub,
        Q_WORKERS="1",
        DOWNLOAD_DISK_RESERVE="0",
        LOG_LEVEL="WARNING",
    )
    env.pop("REDIS_URL", None)
    env.pop("HF_TOKEN", None)
    manage = [PY, "manage.py"]
    subprocess.run([*manage, "migrate", "-v0"], cwd=ROOT, env=env, check=True)
    setup = (
        "from django.contrib.auth import get_user_model\n"
        "from models_app.models import Model\n"
        "from models_app.services import api_token_create\n"
        "u = get_user_model().objects.create_superuser('bench', password='bench-pw')\n"
        f"Model.objects.create(key='one-gib', repo_id={REPO!r}, type='embedding', "
        f"name='One GiB', source='custom', allow_patterns=[{FILE!r}])\n"
        "print(api_token_create(user=u, name='bench')[1])\n"
    )
    token = subprocess.run(
        [*manage, "shell", "-c", setup], cwd=ROOT, env=env, check=True, capture_output=True,
        text=True,
    ).stdout.strip().splitlines()[-1]  # fmt: skip
    port = free_port()
    system = subprocess.Popen(
        [*manage, "run", "--port", str(port)], cwd=ROOT, env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}/api/v1"
    times = []
    rss = PeakRss(system.pid)
    try:
        wait_http(f"http://127.0.0.1:{port}/admin/login/")
        time.sleep(2)  # let the cluster spawn its worker
        rss.start()
        for _ in range(runs):
            started = time.perf_counter()
            op = api(base, token, "POST", "/models/one-gib/download")["operation"]
            while op["state"] not in ("succeeded", "failed", "cancelled"):
                time.sleep(0.05)
                op = api(base, token, "GET", f"/operations/{op['id']}")
            times.append(time.perf_counter() - started)
            if op["state"] != "succeeded":
                raise SystemExit(f"download failed: {op['error_code']} {op['error_message']}")
            shutil.rmtree(tmp / "models" / "hub")
            api(base, token, "POST", "/store/reconcile")
    finally:
        rss.stop.set()
        system.send_signal(2)
        system.wait(timeout=30)
    return times, rss.peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    size = args.size_mib * 1024 * 1024
    sys.path.insert(0, str(ROOT))
    from tests.hub_server import make_repo

    with tempfile.TemporaryDirectory(prefix="modelyard-bench-") as tmp_name:
        tmp = Path(tmp_name)
        make_repo(tmp / "repos", REPO, {FILE: size, "config.json": b"{}"})
        hub, url = start_hub(tmp / "repos")
        try:
            curl = bench_curl(url, size, args.runs, tmp)
            hf = bench_hf(url, size, args.runs, tmp)
            ours, peak = bench_modelyard(url, size, args.runs, tmp)
        finally:
            hub.terminate()
            hub.wait()
    ref = median_rate(size, curl)
    rows = [
        ("curl to disk (reference)", curl),
        ("huggingface_hub.hf_hub_download", hf),
        ("Modelyard API -> worker -> verified blob", ours),
    ]
    print(f"\n{args.size_mib} MiB from the test hub on 127.0.0.1, median of {args.runs}")
    print(f"  {'path':<44} {'MB/s':>8} {'x curl':>7}   runs (s)")
    for name, times in rows:
        rate = median_rate(size, times)
        runs = ", ".join(f"{t:.2f}" for t in times)
        print(f"  {name:<44} {rate:>8.0f} {rate / ref:>7.2f}   {runs}")
    hf_rate, our_rate = median_rate(size, hf), median_rate(size, ours)
    print(f"  worker peak RSS: {peak / 1e6:.0f} MB (goal < 150 MB)")
    ok = our_rate >= 0.85 * ref and our_rate >= hf_rate and peak < 150e6
    print(
        f"  goal: Modelyard >= 0.85 x curl ({our_rate / ref:.2f}) and >= hf_hub_download "
        f"({our_rate / hf_rate:.2f} x): {'ok' if ok else 'NOT MET'}"
    )


if __name__ == "__main__":
    main()
