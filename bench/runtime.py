#!/usr/bin/env python
"""Benchmark the runtime: Gemma 3 270M, 128 tokens in process, by its runner and via Modelyard.

    .venv/bin/python bench/runtime.py [--runs 9] [--json PATH]

The real Gemma 3 270M Q4_K_M GGUF (tests/gemma.py) generates 128 tokens from a fixed prompt
with `max_tokens` 128, greedy (temperature 0) and a fixed seed, as a completion (the file is
a base model: a chat completion would end at once), streamed, on three paths:
  (a) llama-cpp-python in this process, with the best thread count: 1..cores threads are
      measured once first, and the best is kept (the runtime's own choice is printed beside);
  (b) the runner directly: the very runner process (c) reaches, the one Modelyard's
      supervisor loaded in this run, streaming /v1/completions straight at its port with
      its api key (both read from the instance's row): (c) - (b) is the proxy alone, in
      the same process with the same pages touched;
  (c) Modelyard's /v1/completions, streamed through daphne under `manage.py run` (fresh
      SQLite database and store, the file installed in it, an API token), the model loaded
      first through POST /api/v1/runtime/load.
Every path must generate the same text, to the last of its 128 tokens (checked).
Tokens/s is the decode rate: the 127 tokens after the first over the time from the first
token-bearing SSE chunk to the last; time to first token (TTFT) runs from sending the
request (calling the library, for (a)) to the first token-bearing chunk. Each path is warm
(its model's prompt is cached by an untimed request first), as the other two are.

Each run also times a load: an in-process `Llama()` of the same file (same n_ctx and
threads), then POST /api/v1/runtime/load until a client polling GET /api/v1/runtime ever
closer to the expected end sees the instance ready, split into queued (POST to the
supervisor's claim), the supervisor's recorded load_seconds and the runner's own load; and
after the run's generations an unload (POST /api/v1/runtime/unload), sampling the system's
available memory (psutil) and whether the runner process is gone every 0.1 s, until the
runner is gone and the memory is back within 50 MB of its level before the load (and,
beside it, the RSS of `run`'s own tree: what another program did to the memory shows).
After the runs, the idle runtime supervisor's CPU (its own process, over 10 s) with the
model loaded and with none.

Paths are interleaved per run in a rotating order, so each saw the same machine: figures are
medians of `--runs`. Before measuring it prints how idle the machine was and every process
left over from an earlier run or busy beside it; at the end it stops `manage.py run` as a
whole process tree and checks that no runner is left.

Goals (issue 11): (c)/(a) tokens/s >= 0.95; TTFT (c) - (b) <= 15 ms at p50; a load through
Modelyard <= 1.2 x an in-process `Llama()` load; memory back within 2 s of an unload; the idle
supervisor under 1 % of a core.
"""

import argparse
import contextlib
import http.client
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import datetime
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the tests package (the Gemma file, the wait helpers), the runner

from bench.machine import machine_before  # noqa: E402
from models_app.runtime.processes import RUNNER_MODULE  # noqa: E402
from tests.gemma import NAME as GGUF_NAME  # noqa: E402
from tests.gemma import gemma_path  # noqa: E402
from tests.processes import free_port, wait_for_url, wait_until  # noqa: E402

PY = sys.executable
MODEL = "gemma-3-270m-q4_k_m"
N_CTX = 4096
TOKENS = 128
PROMPT = (
    "The old lighthouse keeper climbed the stairs one last time. At the top, he looked out "
    "over the sea and"
)
# Every parameter that differs between the library's and its server's defaults is given, so
# that the three paths sample alike: greedy, a fixed seed, no early stop.
SAMPLING = {
    "max_tokens": TOKENS,
    "temperature": 0.0,
    "top_p": 0.95,
    "top_k": 40,
    "min_p": 0.05,
    "repeat_penalty": 1.1,
    "presence_penalty": 0.0,
    "frequency_penalty": 0.0,
    "seed": 1234,
}
WARM_TOKENS = 8  # an untimed request that caches the prompt on a path
MEMORY_MARGIN = 50e6
SAMPLE_EVERY = 0.1
IDLE_SECONDS = 10.0
LOAD_HEADER = "X-Modelyard-Load-Seconds"
GOALS = {"rate": 0.95, "ttft_ms": 15.0, "load": 1.2, "memory_s": 2.0, "idle_pct": 1.0}


# --- the machine ---------------------------------------------------------------------------


def cpu_seconds(proc: psutil.Process) -> float:
    times = proc.cpu_times()
    return times.user + times.system


def settle(procs, *, timeout: float = 30.0, window: float = 0.3) -> None:
    """Wait until none of `procs` uses 2 % of a core or more (a spare runner's imports).

    After a load, the supervisor starts a new spare runner, whose imports take a core for
    about a second: no path is measured beside it.
    """

    def quiet() -> bool:
        before = {}
        for proc in procs:
            with contextlib.suppress(psutil.Error):
                before[proc.pid] = (proc, cpu_seconds(proc))
        time.sleep(window)
        used = 0.0
        for proc, start in before.values():
            with contextlib.suppress(psutil.Error):
                used = max(used, cpu_seconds(proc) - start)
        return used / window < 0.02

    try:
        wait_until(quiet, timeout=timeout, what="quiet", interval=0)
    except TimeoutError:
        print(f"  note: the runners did not settle within {timeout:.0f} s", file=sys.stderr)


def available() -> int:
    return psutil.virtual_memory().available


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


# --- one generation ------------------------------------------------------------------------


class Generation:
    """One streamed completion: when each token-bearing chunk came, and what it said."""

    def __init__(self, started: float):
        self.started = started
        self.stamps: list[float] = []
        self.texts: list[str] = []
        self.finish: str | None = None
        self.load_header: str | None = None
        self.headers_at: float | None = None  # HTTP: when the response's headers came

    def chunk(self, choice: dict) -> None:
        if choice.get("text"):
            self.stamps.append(time.perf_counter())
            self.texts.append(choice["text"])
        self.finish = choice.get("finish_reason") or self.finish

    @property
    def text(self) -> str:
        return "".join(self.texts)

    @property
    def ttft_ms(self) -> float:
        return (self.stamps[0] - self.started) * 1000

    @property
    def headers_ms(self) -> float | None:
        return None if self.headers_at is None else (self.headers_at - self.started) * 1000

    @property
    def rate(self) -> float:
        """Tokens a second after the first: max_tokens were made (finish_reason length)."""
        return (TOKENS - 1) / (self.stamps[-1] - self.stamps[0])

    def check(self, where: str) -> "Generation":
        if not self.stamps or self.finish != "length":
            raise SystemExit(
                f"{where}: expected {TOKENS} tokens (finish_reason length), got finish_reason "
                f"{self.finish!r} after {len(self.stamps)} chunks: {self.text[:200]!r}"
            )
        return self


def stream_in_process(llm, max_tokens: int = TOKENS) -> Generation:
    generation = Generation(time.perf_counter())
    for chunk in llm.create_completion(
        PROMPT, stream=True, **dict(SAMPLING, max_tokens=max_tokens)
    ):
        generation.chunk(chunk["choices"][0])
    return generation


def stream_http(
    port: int, token: str, *, model: str | None, max_tokens: int = TOKENS
) -> Generation:
    """POST a streamed /v1/completions and read its SSE events as they come."""
    body = {"prompt": PROMPT, "stream": True, **SAMPLING, "max_tokens": max_tokens}
    if model:
        body["model"] = model
    payload = json.dumps(body).encode()
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    try:
        generation = Generation(time.perf_counter())
        conn.request("POST", "/v1/completions", body=payload, headers=headers)
        response = conn.getresponse()
        generation.headers_at = time.perf_counter()
        if response.status != 200:
            raise SystemExit(
                f"/v1/completions on port {port}: {response.status} {response.read()!r}"
            )
        generation.load_header = response.getheader(LOAD_HEADER)
        while line := response.readline():
            line = line.strip()
            if not line.startswith(b"data:"):
                continue  # an SSE blank line or comment (a ping)
            data = line[5:].strip()
            if data == b"[DONE]":
                break
            generation.chunk(json.loads(data)["choices"][0])
        return generation
    finally:
        conn.close()


# --- Modelyard -----------------------------------------------------------------------------

SETUP = """
from pathlib import Path
from django.conf import settings
from django.contrib.auth import get_user_model
from models_app.models import Model
from models_app.services import api_token_create
from tests.runtime_helpers import install_gguf
user = get_user_model().objects.create_superuser("bench", password="bench-pw")
model = Model.objects.create(
    key={model!r}, repo_id="bench/gemma-3-270m-GGUF", type="llm", name="Gemma 3 270M",
    source="custom", gguf_file={file!r}, context_window=32768, allow_patterns=[],
)
install_gguf(model, Path({path!r}), settings.MODELS_HUB_DIR)
print(api_token_create(user=user, name="bench")[1])
"""


class Modelyard:
    """`manage.py run` (daphne, a qcluster, the runtime supervisor) on a fresh database."""

    def __init__(self, tmp: Path, gguf: Path):
        self.tmp = tmp
        self.env = dict(
            os.environ,
            DATABASE_URL=f"sqlite:///{tmp / 'bench.sqlite3'}",
            MODELS_DIR=str(tmp / "models"),
            LEGACY_HUB_DIR=str(tmp / "no-legacy"),
            HOST_NAME="bench-runtime",
            Q_WORKERS="1",
            LOG_LEVEL="WARNING",
        )
        self.env.pop("REDIS_URL", None)
        self.env.pop("HF_TOKEN", None)
        self.gguf = gguf
        # Outside the temporary directory: it is kept for a look after a failure.
        self.log_path = Path(tempfile.gettempdir()) / "modelyard-bench-runtime.log"
        self.runner_pids: set[int] = set()  # every runner seen under the supervisor

    def __enter__(self) -> "Modelyard":
        manage = [PY, "manage.py"]
        subprocess.run([*manage, "migrate", "-v0"], cwd=ROOT, env=self.env, check=True)
        setup = SETUP.format(model=MODEL, file=GGUF_NAME, path=str(self.gguf))
        self.token = subprocess.run(
            [*manage, "shell", "-c", setup], cwd=ROOT, env=self.env, check=True,
            capture_output=True, text=True,
        ).stdout.strip().splitlines()[-1]  # fmt: skip
        self.port = free_port()
        self.log = self.log_path.open("w")
        self.proc = subprocess.Popen(
            [*manage, "run", "--port", str(self.port)], cwd=ROOT, env=self.env,
            stdout=self.log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            wait_for_url(f"http://127.0.0.1:{self.port}/admin/login/", timeout=60, proc=self.proc)
            hosts = wait_until(
                lambda: self.api("GET", "/runtime")["hosts"],
                timeout=60,
                what="the runtime supervisor's heartbeat",
                proc=self.proc,
            )
        except BaseException:
            self.stop()
            raise
        self.supervisor = psutil.Process(hosts[0]["pid"])
        self.threads = hosts[0]["threads"]
        return self

    def __exit__(self, *exc_info) -> None:
        if exc_info[0] is not None:
            self.log.flush()
            lines = [
                line
                for line in self.log_path.read_text(errors="replace").splitlines()
                if '"GET /api/v1/' not in line  # daphne's access log of the bench's polls
            ]
            print(f"manage.py run's last log lines ({self.log_path}):", *lines[-40:], sep="\n  ")
        self.stop()

    def stop(self) -> None:
        """Stop `run` (SIGINT, as Ctrl-C) and its whole tree; kill what is left after 30 s."""
        self.runners()
        tree = []
        with contextlib.suppress(psutil.Error):
            tree = [psutil.Process(self.proc.pid), *psutil.Process(self.proc.pid).children(True)]
        started = time.monotonic()
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(2)
        _, alive = psutil.wait_procs(tree, timeout=30)
        self.killed = []
        for proc in alive:
            with contextlib.suppress(psutil.Error):
                self.killed.append(f"{proc.pid} {' '.join(proc.cmdline())[:90]}")
                proc.kill()
        psutil.wait_procs(alive, timeout=10)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)
        self.stop_seconds = time.monotonic() - started
        self.log.close()
        self.runners_left = [pid for pid in self.runner_pids if not gone(pid)]

    def tree(self) -> list[psutil.Process]:
        with contextlib.suppress(psutil.Error):
            return [psutil.Process(self.proc.pid), *psutil.Process(self.proc.pid).children(True)]
        return []

    def runners(self) -> list[psutil.Process]:
        found = []
        for proc in self.tree():
            with contextlib.suppress(psutil.Error):
                if RUNNER_MODULE in " ".join(proc.cmdline()):
                    found.append(proc)
                    self.runner_pids.add(proc.pid)
        return found

    def api(self, method: str, path: str, body: dict | None = None) -> dict:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}/api/v1{path}",
            method=method,
            data=json.dumps(body).encode() if body is not None else None,
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())

    def instance(self) -> dict | None:
        return next(
            (i for i in self.api("GET", "/runtime")["instances"] if i["model"] == MODEL), None
        )

    def load(self, *, expected: float) -> dict:
        """Load the model; return what a client polling ever closer to `expected` s saw."""
        posted = time.time()
        started = time.perf_counter()
        answer = self.api(
            "POST", "/runtime/load", {"model": MODEL, "n_ctx": N_CTX, "keep_alive": -1}
        )
        post = time.perf_counter() - started
        op_id = answer["operation"]["id"]
        polls = 0
        while True:
            instance = self.instance()
            polls += 1
            if instance is not None and instance["state"] == "ready":
                break
            if instance is not None and instance["state"] == "failed":
                raise SystemExit(
                    f"load failed: {instance['error_code']} {instance['error_message']}"
                )
            if instance is None and polls % 10 == 0:  # an operation that ended before it
                op = self.api("GET", f"/operations/{op_id}")
                if op["state"] not in ("queued", "running"):
                    raise SystemExit(
                        f"load #{op_id} ended {op['state']}: {op['error_code']} "
                        f"{op['error_message']}"
                    )
            if time.perf_counter() - started > 300:
                raise SystemExit("the model did not load within 300 s")
            # Half the time to the expected end, between 10 and 100 ms: every answer costs
            # daphne CPU on the cores the load runs on.
            left = expected - (time.perf_counter() - started)
            time.sleep(min(0.1, max(0.01, left / 2)))
        seen = time.perf_counter() - started
        op = wait_until(
            lambda: (o := self.api("GET", f"/operations/{op_id}"))["state"] == "succeeded" and o,
            timeout=30,
            what="the load operation's end",
        )
        claimed = datetime.fromisoformat(op["started_at"]).timestamp()
        self.runners()
        return {
            "seen": seen,
            "post": post,
            "queued": claimed - posted,
            "supervisor": instance["load_seconds"],
            "runner": op["result"]["load_seconds"],
            "polls": polls,
            "pid": instance["pid"],
            "rss": instance["rss"],
        }

    def tree_rss(self) -> int:
        """Return the resident memory of `run`'s whole tree (daphne, cluster, runtime, runners)."""
        total = 0
        for proc in self.tree():
            with contextlib.suppress(psutil.Error):
                total += proc.memory_info().rss
        return total

    def unload(self, *, before: int, pid: int, tree_before: int | None = None) -> dict:
        """Unload the model; sample memory and the runner every 0.1 s until it is back.

        The system's available memory is the figure; the RSS of `run`'s own tree, sampled
        beside it, tells a change of ours from one of another program on the machine.
        """
        started = time.perf_counter()
        self.api("POST", "/runtime/unload", {"model": MODEL})
        back_at = gone_at = tree_back_at = None
        samples = []
        while time.perf_counter() - started < 10:
            now = time.perf_counter() - started
            level = available()
            tree = self.tree_rss() if tree_before is not None else None
            samples.append((round(now, 2), level, tree))
            if gone_at is None and gone(pid):
                gone_at = now
            # Not back while the runner lives: available memory that rose before it ended
            # came from another program.
            if back_at is None and gone_at is not None and level >= before - MEMORY_MARGIN:
                back_at = now
            if (
                tree_back_at is None
                and gone_at is not None
                and tree is not None
                and tree <= tree_before + MEMORY_MARGIN
            ):
                tree_back_at = now
            if None not in (back_at, gone_at) and (tree_before is None or tree_back_at is not None):
                break
            time.sleep(max(0.0, SAMPLE_EVERY - (time.perf_counter() - started - now)))
        wait_until(lambda: self.instance() is None, timeout=30, what="the instance's removal")
        return {
            "back": back_at,
            "gone": gone_at,
            "tree_back": tree_back_at,
            "tree_before": tree_before,
            "after": samples[-1][1],
            "samples": samples,
        }

    def runner_address(self) -> tuple[int, str]:
        """Return the port and api key of the ready instance's runner (from its row)."""
        with contextlib.closing(sqlite3.connect(self.tmp / "bench.sqlite3")) as db:
            row = db.execute(
                "SELECT port, secret FROM models_app_runtimeinstance WHERE state = 'ready'"
            ).fetchone()
        if row is None:
            raise SystemExit("no ready instance to reach directly")
        return row[0], row[1]

    def idle_cpu(self, seconds: float = IDLE_SECONDS) -> float:
        """Return the supervisor's CPU over `seconds`, as % of a core."""
        start, at = cpu_seconds(self.supervisor), time.perf_counter()
        time.sleep(seconds)
        return 100 * (cpu_seconds(self.supervisor) - start) / (time.perf_counter() - at)


# --- the bench -----------------------------------------------------------------------------


def in_process_load(gguf: Path, threads: int):
    from llama_cpp import Llama

    started = time.perf_counter()
    llm = Llama(
        model_path=str(gguf), n_ctx=N_CTX, n_threads=threads, n_threads_batch=threads,
        verbose=False,
    )  # fmt: skip
    return llm, time.perf_counter() - started


def best_threads(gguf: Path) -> tuple[int, dict[int, float], object]:
    """Measure 1..cores threads in process once; return the best, every rate, its Llama."""
    rates, best, kept = {}, 0, None
    for threads in range(1, (os.cpu_count() or 1) + 1):
        llm, _ = in_process_load(gguf, threads)
        stream_in_process(llm, WARM_TOKENS)
        rates[threads] = stream_in_process(llm).check(f"in process, {threads} threads").rate
        print(f"  in process, {threads} thread(s): {rates[threads]:.1f} tokens/s", file=sys.stderr)
        if kept is None or rates[threads] > rates[best]:
            if kept is not None:
                kept.close()
            best, kept = threads, llm
        else:
            llm.close()
    return best, rates, kept


def median(values) -> float:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else float("nan")


def one_run(n: int, system: "Modelyard", llm, gguf: Path, figures: dict):
    """Load through Modelyard (beside an in-process load), generate on each path, unload."""
    fresh, took = in_process_load(gguf, system.threads)  # the runtime's n_ctx and threads
    fresh.close()
    del fresh
    figures["in_process_load"].append(took)
    settle(system.runners())
    before, tree_before = available(), system.tree_rss()
    load = system.load(expected=took)
    figures["loads"].append(load)
    # Untimed: the fresh runner caches the prompt and touches its buffers' pages, as (a)
    # has, on each of its two ways in (and the supervisor's new spare runner finishes its
    # imports before anything is measured).
    port_b, key_b = system.runner_address()
    stream_http(port_b, key_b, model=MODEL, max_tokens=TOKENS)
    stream_http(system.port, system.token, model=MODEL, max_tokens=WARM_TOKENS)
    settle(system.runners())
    paths = {
        "a": lambda: stream_in_process(llm),
        "b": lambda: stream_http(port_b, key_b, model=MODEL),
        "c": lambda: stream_http(system.port, system.token, model=MODEL),
    }
    order = list(paths)
    for name in order[n % len(order) :] + order[: n % len(order)]:
        generation = paths[name]().check(f"run {n + 1}, path ({name})")
        figures["generations"][name].append(generation)
        print(
            f"  run {n + 1}: ({name}) {generation.rate:.1f} tokens/s, "
            f"TTFT {generation.ttft_ms:.1f} ms",
            file=sys.stderr,
        )
    unload = system.unload(before=before, pid=load["pid"], tree_before=tree_before)
    unload["before"] = before
    figures["unloads"].append(unload)
    back = "not within 10 s" if unload["back"] is None else f"{unload['back']:.2f} s"
    print(
        f"  run {n + 1}: load in process {took:.2f} s, through Modelyard {load['seen']:.2f} s;"
        f" memory back after the unload {back}",
        file=sys.stderr,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    # 9, not 5: each path's tokens/s spread 20 % between runs on this machine.
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--json", metavar="PATH", help="Also write every figure to PATH as JSON.")
    args = parser.parse_args()
    os.chdir(ROOT)  # a Runner starts `python -m models_app.runtime.runner` from its cwd
    import llama_cpp

    gguf = gemma_path()
    machine = machine_before("before measuring")
    load_avg = os.getloadavg()
    figures = {
        "generations": {"a": [], "b": [], "c": []},
        "in_process_load": [],
        "loads": [],
        "unloads": [],
    }
    with tempfile.TemporaryDirectory(prefix="modelyard-bench-runtime-") as tmp_name:
        best, rates, llm = best_threads(gguf)
        try:
            with Modelyard(Path(tmp_name), gguf) as system:
                # Outside the figures: the first load through Modelyard, and each path's
                # first requests (each daphne process's first one opens its client).
                warm = system.load(expected=1.0)
                port_b, key_b = system.runner_address()
                for port, key in ((port_b, key_b), (system.port, system.token)):
                    for _ in range(3):
                        stream_http(port, key, model=MODEL, max_tokens=WARM_TOKENS)
                stream_in_process(llm, WARM_TOKENS)
                system.unload(before=available(), pid=warm["pid"])
                for n in range(args.runs):
                    one_run(n, system, llm, gguf, figures)
                # The idle supervisor: with the model loaded, then with none.
                load = system.load(expected=median(figures["in_process_load"]))
                settle(system.runners())
                runner = psutil.Process(load["pid"])
                start = cpu_seconds(runner)
                figures["idle_loaded"] = system.idle_cpu()
                figures["idle_runner"] = 100 * (cpu_seconds(runner) - start) / IDLE_SECONDS
                system.unload(before=available(), pid=load["pid"])
                settle(system.runners())
                figures["idle_none"] = system.idle_cpu()
        finally:
            llm.close()
    figures["stop_seconds"] = system.stop_seconds
    figures["killed"] = system.killed
    figures["runners_left"] = system.runners_left
    figures.update(machine=machine, best=best, rates=rates, threads=system.threads)
    figures.update(warm=warm, llama_cpp=llama_cpp.__version__)
    report(figures, args, load_avg)


def report(figures: dict, args, load_avg) -> None:
    gens = figures["generations"]
    rate = {name: median(g.rate for g in runs) for name, runs in gens.items()}
    ttft = {name: median(g.ttft_ms for g in runs) for name, runs in gens.items()}
    texts = {g.text for runs in gens.values() for g in runs}
    headers = sorted({g.load_header for g in gens["c"]}, key=str)
    loads, unloads = figures["loads"], figures["unloads"]
    in_process = median(figures["in_process_load"])
    seen = median(load["seen"] for load in loads)
    queued = median(load["queued"] for load in loads)
    supervisor = median(load["supervisor"] for load in loads)
    runner = median(load["runner"] for load in loads)
    backs = [u["back"] for u in unloads]
    back = median(backs) if None not in backs else float("inf")
    gone_after = median(u["gone"] for u in unloads)
    mb = 1e6
    before = median(u["before"] for u in unloads)
    after = median(u["after"] for u in unloads)
    rss = median(load["rss"] for load in loads)
    print(
        f"\nGemma 3 270M Q4_K_M (llama-cpp-python {figures['llama_cpp']}), {TOKENS} tokens streamed"
        f" at n_ctx {N_CTX}, median of {args.runs} interleaved runs; load average at the start"
        f" {' '.join(f'{x:.2f}' for x in load_avg)}, at the end"
        f" {' '.join(f'{x:.2f}' for x in os.getloadavg())} ({os.cpu_count()} cores)"
    )
    machine = figures["machine"]
    print(
        f"  machine before: {machine['idle_before']:.0f}% idle; processes left over / busy:"
        f" {len(machine['leftover'])} / {len(machine['busy'])}"
    )
    threads = ", ".join(f"{n}: {r:.1f}" for n, r in figures["rates"].items())
    print(
        f"  threads in process (tokens/s, measured once): {threads} -> best {figures['best']};"
        f" the runtime runs {figures['threads']} (its runner serves (b) and (c))"
    )
    warm = figures["warm"]
    print(f"  warm-up, outside the figures: Modelyard's first load seen in {warm['seen']:.2f} s")
    print(
        f"  {'path':<42} {'tokens/s':>8} {'x (a)':>6} {'TTFT ms':>8} {'headers':>8}"
        "   runs (tokens/s, TTFT ms)"
    )
    labels = {
        "a": f"(a) llama-cpp-python in process, {figures['best']} thr",
        "b": f"(b) the runner directly, {figures['threads']} thr",
        "c": "(c) Modelyard /v1/completions (daphne)",
    }
    for name, label in labels.items():
        runs = ", ".join(f"{g.rate:.1f} {g.ttft_ms:.1f}" for g in gens[name])
        head = median(g.headers_ms for g in gens[name])
        head = "-" if head != head else f"{head:.1f}"  # NaN: in process, no headers
        print(
            f"  {label:<42} {rate[name]:>8.1f} {rate[name] / rate['a']:>6.2f}"
            f" {ttft[name]:>8.1f} {head:>8}   {runs}"
        )
    print("    (headers: ms from sending the request to the response's headers)")
    sample = next(iter(texts))
    same = len(texts) == 1
    print(
        f"  same text on every path and run: {'yes' if same else f'NO ({len(texts)} texts)'};"
        f" it begins {sample[:60]!r}"
    )
    if not same:
        for text in texts:
            print(f"    {text!r}")
    print(f"  {LOAD_HEADER} on (c): {', '.join(map(str, headers))}")
    print(
        f"  load: in process Llama() {in_process:.2f} s; through Modelyard seen {seen:.2f} s ="
        f" queued {queued:.2f} (the POST answered in {median(ld['post'] for ld in loads):.3f})"
        f" + the supervisor's load_seconds {supervisor:.2f} (the runner's own load {runner:.2f})"
        f" + the rest {seen - queued - supervisor:.2f} (writes, publish, the poll);"
        f" {median(load['polls'] for load in loads):.0f} polls"
    )
    print(
        "    runs (in process / seen s): "
        + ", ".join(
            f"{a:.2f} / {load['seen']:.2f}"
            for a, load in zip(figures["in_process_load"], loads, strict=True)
        )
    )
    print(
        f"  memory available: before the load {before / mb:.0f} MB, the runner's RSS loaded"
        f" {rss / mb:.0f} MB; after the unload {after / mb:.0f} MB; back within"
        f" {MEMORY_MARGIN / mb:.0f} MB in {back:.2f} s, the runner gone in {gone_after:.2f} s"
    )
    tree_back = [u["tree_back"] for u in unloads]
    tree_back = median(tree_back) if None not in tree_back else float("inf")
    tree_before = median(u["tree_before"] for u in unloads)
    print(
        f"    beside it, the RSS of run's own tree ({tree_before / mb:.0f} MB before the load)"
        f" back within {MEMORY_MARGIN / mb:.0f} MB in {tree_back:.2f} s: available memory that"
        " comes back later than this moved with another program"
    )
    runs = ", ".join(
        f"{secs(u['back'])} / {secs(u['gone'])} / {secs(u['tree_back'])}" for u in unloads
    )
    print(f"    runs (available back / runner gone / tree back, s): {runs}")
    print(
        f"  idle CPU over {IDLE_SECONDS:.0f} s: the supervisor {figures['idle_loaded']:.2f}% of a"
        f" core with the model loaded (its runner {figures['idle_runner']:.2f}%),"
        f" {figures['idle_none']:.2f}% with none"
    )
    left = len(figures["runners_left"])
    print(
        f"  stop: manage.py run and its tree stopped in {figures['stop_seconds']:.1f} s;"
        f" killed after 30 s: {len(figures['killed'])}; runner processes left: {left}"
    )
    ratio = rate["c"] / rate["a"]
    extra = ttft["c"] - ttft["b"]
    load_ratio = seen / in_process
    goals = [
        ("(c) / (a) tokens/s", f"{ratio:.2f}", f"(a) {rate['a']:.1f}/s", ">= 0.95",
         ratio >= GOALS["rate"]),
        ("TTFT (c) - (b), p50 (ms)", f"{extra:.1f}", f"(b) {ttft['b']:.1f} ms", "<= 15",
         extra <= GOALS["ttft_ms"]),
        ("Modelyard load / in process", f"{load_ratio:.2f}", f"{in_process:.2f} s", "<= 1.2",
         load_ratio <= GOALS["load"]),
        ("memory back after unload (s)", f"{back:.2f}", f"{before / mb:.0f} MB", "<= 2",
         back <= GOALS["memory_s"]),
        ("idle supervisor, loaded (%)", f"{figures['idle_loaded']:.2f}", "", "< 1",
         figures["idle_loaded"] < GOALS["idle_pct"]),
        ("idle supervisor, none (%)", f"{figures['idle_none']:.2f}", "", "< 1",
         figures["idle_none"] < GOALS["idle_pct"]),
        ("same tokens on every path", "yes" if same else "NO", "", "yes", same),
        ("runner processes left", f"{left}", "", "0", left == 0),
    ]  # fmt: skip
    print(f"\n  {'figure':<30} {'value':>6}  {'reference':<14} {'goal':<8} met")
    for label, value, reference, goal, met in goals:
        print(f"  {label:<30} {value:>6}  {reference:<14} {goal:<8} {'met' if met else 'NOT met'}")
    if args.json:
        out = {
            key: value for key, value in figures.items() if key not in ("generations", "unloads")
        }
        out["generations"] = {
            name: [
                {"tokens_per_s": g.rate, "ttft_ms": g.ttft_ms, "headers_ms": g.headers_ms}
                for g in runs
            ]
            for name, runs in gens.items()
        }
        out["unloads"] = unloads  # with every sample: (seconds after the POST, bytes)
        out["medians"] = {
            "tokens_per_s": rate, "ttft_ms": ttft, "in_process_load": in_process,
            "modelyard_load_seen": seen, "memory_back": back, "runner_gone": gone_after,
            "tree_rss_back": tree_back,
        }  # fmt: skip
        out["goals"] = {label: {"value": value, "met": met} for label, value, _, _, met in goals}
        out["same_text"] = same
        Path(args.json).write_text(json.dumps(out, indent=2, default=str))


def secs(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


if __name__ == "__main__":
    main()
