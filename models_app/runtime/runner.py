"""The runner program: one process serving one loaded GGUF with llama-cpp-python's server.

    python -m models_app.runtime.runner

No Django here. The runtime supervisor starts it ahead of need (a spare: the imports,
about a third of a second, are paid before a load is asked for), then writes one JSON
line to its stdin: what to load and how. The runner binds its port, loads the model
through `llama_cpp.server.app.create_app` (llama-cpp-python's own OpenAI-compatible
server), and answers with one JSON line on stdout:

    {"event": "ready", "port": 40123, "load_seconds": 0.91, ...}
    {"event": "error", "code": "ERR_FORMAT", "message": "..."}   (then it exits 3)

It serves until SIGTERM (uvicorn's graceful stop, a second at most) and exits when its
parent, the supervisor, is gone: a runner never outlives the process that owns it, and
its memory comes back when the process ends.
"""

from __future__ import annotations

import collections
import json
import os
import re
import socket
import sys
import threading
import time

PARENT_CHECK_EVERY = 0.5
# The supervisor's RUNTIME_SPARE_HEAP, in bytes: how much heap a spare faults in ahead.
WARM_HEAP_ENV = "MODELYARD_RUNNER_WARM_HEAP"
# glibc's mallopt parameters (malloc.h).
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
MMAP_THRESHOLD = 32 * 1024**2  # glibc's largest dynamic threshold, fixed from the start
# llama.cpp's enum llama_pooling_type.
POOLING_TYPES = {"none": 0, "mean": 1, "cls": 2, "last_token": 3, "rank": 4}


def _say(event: str, **fields) -> None:
    sys.stdout.write(json.dumps({"event": event, **fields}) + "\n")
    sys.stdout.flush()


def _exit_with_parent(parent: int) -> None:
    """Exit at once when the supervisor that started this runner is gone (reparented)."""
    while True:
        time.sleep(PARENT_CHECK_EVERY)
        if os.getppid() != parent:
            os._exit(0)


# ggml's log levels (ggml.h): an error line, and the continuation of the line before.
# (llama-cpp-python's _logger still maps the older enum, where 3 was the error level.)
GGML_LOG_LEVEL_ERROR = 4
GGML_LOG_LEVEL_CONT = 5


def _llama_errors() -> tuple[collections.deque, object]:
    """Keep the last lines llama.cpp logs at error level; return them and the callback.

    llama-cpp-python's exception only says "Failed to load model from file"; why (a key
    missing from the header, a bad tensor) is what llama.cpp logged just before, and its
    log is silenced while a model loads (verbose=False). The library's own callback still
    gets every line. The callback must stay referenced: ctypes frees it otherwise.
    """
    import ctypes

    import llama_cpp
    from llama_cpp import _logger

    lines: collections.deque = collections.deque(maxlen=8)
    forward = _logger.llama_log_callback
    previous = [0]

    @llama_cpp.llama_log_callback
    def callback(level, text, user_data):
        if level == GGML_LOG_LEVEL_ERROR or (
            level == GGML_LOG_LEVEL_CONT and previous[0] == GGML_LOG_LEVEL_ERROR
        ):
            lines.append(text.decode("utf-8", "replace"))
        if level != GGML_LOG_LEVEL_CONT:
            previous[0] = level
        forward(level, text, user_data)

    llama_cpp.llama_log_set(callback, ctypes.c_void_p(0))
    return lines, callback


def _refusal(lines, exc: Exception) -> str:
    """Return why llama.cpp refused the file: its error lines (without the function names)."""
    said = [re.sub(r"^\w+: ", "", line.strip()) for line in "".join(lines).splitlines()]
    said = [line for line in said if line]
    return "; ".join(dict.fromkeys(said)) if said else str(exc)


def heap_warm(size: int) -> int:
    """Fault `size` bytes of malloc's heap in now, and keep them for the load; return it.

    A fresh process's first `Llama()` load paid about 15,000 more minor page faults than a
    second load in the same process (Gemma 270M: 38,700 against 23,900; bench/load_faults.py):
    llama.cpp's allocations under 32 MiB take fresh heap pages, which a second load finds
    freed and already mapped. A spare waits anyway, so it pays that ahead: with the mmap
    threshold fixed at 32 MiB (glibc would raise it only after the first big free) and a trim
    threshold above `size`, it allocates, touches and frees `size` in 1 MiB blocks, and the
    heap keeps the pages for the load to reuse. Costs the idle spare `size` of RSS and
    nothing once loaded (the load uses those pages). glibc only; 0 elsewhere or when off.
    """
    if size <= 0 or not sys.platform.startswith("linux"):
        return 0
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.gnu_get_libc_version  # noqa: B018  (musl has none of this)
    except (OSError, AttributeError):
        return 0
    libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    if not (
        libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) and libc.mallopt(M_TRIM_THRESHOLD, 2 * size)
    ):
        return 0
    block = 1024**2
    blocks = [libc.malloc(block) for _ in range(size // block)]
    for address in blocks:
        if address:
            ctypes.memset(address, 0, block)
    for address in blocks:
        libc.free(address)
    return sum(block for address in blocks if address)


def llama_calls_on_one_thread(server_app) -> None:
    """Make llama-cpp-python's server run every model call on one thread of its own.

    The server hands each call (a completion, each next token of a stream, an embedding) to
    starlette's thread pool, which has up to 40 threads: over a few requests the model ran
    on several. llama.cpp's CPU backend here is built with OpenMP, and each thread that
    calls it starts its own OpenMP team, which stays while the thread lives. With more of
    libgomp's threads than cores, libgomp waits in its barriers with a short spin and then
    sleeps: on 2 cores a runner fell from 44 to 27 tokens/s, with 28 % of the CPU idle, from
    its second request on, until the idle pool threads were gone. One thread, one team.
    Requests already wait their turn for the model (the server's lock), so one thread
    takes nothing from them.
    """
    import asyncio
    import functools
    from concurrent.futures import ThreadPoolExecutor

    llama_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="llama")

    async def run_in_llama_thread(func, *args, **kwargs):
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(llama_thread, functools.partial(func, *args, **kwargs))

    async def iterate_in_llama_thread(iterator):
        done = object()
        while (item := await run_in_llama_thread(next, iterator, done)) is not done:
            yield item

    for name in ("run_in_threadpool", "iterate_in_threadpool"):
        if not hasattr(server_app, name):  # a llama-cpp-python that works differently
            raise RuntimeError(f"llama_cpp.server.app has no {name} to replace")
    server_app.run_in_threadpool = run_in_llama_thread
    server_app.iterate_in_threadpool = iterate_in_llama_thread


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    # Listening before the model loads: a request that arrives early waits in the backlog.
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def main() -> int:
    parent = os.getppid()
    threading.Thread(target=_exit_with_parent, args=(parent,), daemon=True).start()

    import llama_cpp
    import llama_cpp.server.app
    import uvicorn
    from llama_cpp.server.app import create_app
    from llama_cpp.server.settings import ModelSettings, ServerSettings

    errors, _callback = _llama_errors()
    llama_calls_on_one_thread(llama_cpp.server.app)
    warmed = heap_warm(int(os.environ.get(WARM_HEAP_ENV) or 0))
    # What it runs with: malloc's tunables, if an operator set any (processes.py).
    malloc = os.environ.get("GLIBC_TUNABLES", "")
    _say(
        "spare",
        pid=os.getpid(),
        llama_cpp=llama_cpp.__version__,
        malloc=malloc,
        heap_warmed=warmed,
    )
    line = sys.stdin.readline()
    if not line:  # the supervisor closed the pipe: not needed after all
        return 0
    spec = json.loads(line)
    try:
        sock = _bind(spec.get("host", "127.0.0.1"), int(spec.get("port", 0)))
    except OSError as exc:
        _say("error", code="ERR_INVALID", message=f"Cannot listen: {exc.strerror or exc}.")
        return 3
    port = sock.getsockname()[1]
    started = time.monotonic()
    overrides = []  # the server's form: "key=type:value"
    if spec.get("pooling") in POOLING_TYPES and spec.get("architecture"):
        pooling = POOLING_TYPES[spec["pooling"]]
        overrides.append(f"{spec['architecture']}.pooling_type=int:{pooling}")
    try:
        model = _model_settings(ModelSettings, spec, overrides)
    except ValueError as exc:  # pydantic's ValidationError: a spec this runner cannot take
        _say("error", code="ERR_INVALID", message=f"Runner settings refused: {exc}")
        return 3
    server = ServerSettings(
        host=spec.get("host", "127.0.0.1"),
        port=port,
        api_key=spec["api_key"],
        # Requests wait their turn: by default a stream is cut short (a bare [DONE]) as soon
        # as another request waits, and every web process of every host shares this runner.
        interrupt_requests=False,
    )
    try:
        app = create_app(server_settings=server, model_settings=[model])
    except Exception as exc:  # llama.cpp refused the file: a ValueError naming it
        reason = _refusal(errors, exc)
        _say("error", code="ERR_FORMAT", message=f"llama.cpp could not load the model: {reason}")
        return 3
    # The runner is reached only by its supervisor's web processes: no CORS, and no
    # request-id context (nothing reads it). Each middleware wraps every streamed chunk's
    # send, on the loop thread, while the model computes the next token.
    app.user_middleware.clear()
    load_seconds = time.monotonic() - started
    _say("ready", port=port, load_seconds=round(load_seconds, 4), pid=os.getpid())
    config = uvicorn.Config(app, log_level="warning", access_log=False, timeout_graceful_shutdown=1)
    uvicorn.Server(config).run(sockets=[sock])
    return 0


def _model_settings(ModelSettings, spec: dict, overrides: list[str]):
    return ModelSettings(
        model=spec["model_path"],
        model_alias=spec.get("alias") or None,
        n_ctx=int(spec["n_ctx"]),
        n_gpu_layers=int(spec.get("n_gpu_layers", 0)),
        n_threads=int(spec["n_threads"]),
        n_threads_batch=int(spec["n_threads"]),
        n_batch=int(spec.get("n_batch", 512)),
        embedding=bool(spec.get("embedding", False)),
        kv_overrides=overrides or None,
        # The server's default keeps a float32 score row per token of the context (1 MiB a
        # token with a 262K vocabulary: 2.3 GB after a 480-token prompt on Gemma 270M).
        # Off, as llama-cpp-python's Llama() has it; logprobs are not offered.
        logits_all=False,
        verbose=False,
    )


if __name__ == "__main__":
    sys.exit(main())
