#!/usr/bin/env python
"""Time writing 1 GiB through the page cache into fresh pages, and into pages just freed.

    .venv/bin/python bench/page_cache.py [--dir DIR] [--rounds 3] [--idle 5]

Each round sleeps `--idle` seconds, then writes 1 GiB to a file in DIR (1 MiB writes, no
fsync) and unlinks it, twice in a row: the first write takes pages the machine has not
used for a while, the second the pages the first just freed. On a VM whose guest reports
free memory to its host (Firecracker's page_reporting, as here) the first pays for the
host giving the pages back; on bare metal both take about as long. It is why the blob
sink writes with O_DIRECT (docs/ARCHITECTURE-NOTES.md, "Writing a blob").
"""

import argparse
import os
import tempfile
import time

SIZE = 1 << 30
CHUNK = b"\x01" * (1 << 20)


def write_and_unlink(path: str) -> float:
    started = time.perf_counter()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for _ in range(SIZE // len(CHUNK)):
            os.write(fd, CHUNK)
    finally:
        os.close(fd)
    took = time.perf_counter() - started
    os.unlink(path)
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", default=tempfile.gettempdir())
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--idle", type=float, default=5.0)
    args = parser.parse_args()
    path = os.path.join(args.dir, f"modelyard-page-cache-{os.getpid()}.bin")
    print(f"1 GiB written through the page cache in {args.dir} (load average {os.getloadavg()})")
    for n in range(1, args.rounds + 1):
        time.sleep(args.idle)
        fresh = write_and_unlink(path)
        reused = write_and_unlink(path)
        rates = SIZE / fresh / 1e6, SIZE / reused / 1e6
        print(
            f"  round {n}: after {args.idle:g} s idle {fresh:.2f} s ({rates[0]:.0f} MB/s);"
            f" right after, into the pages just freed {reused:.2f} s ({rates[1]:.0f} MB/s)"
        )


if __name__ == "__main__":
    main()
