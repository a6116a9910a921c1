#!/usr/bin/env python
"""Benchmark the delete usage preflight with 5 and with 500 repos in the models store.

    .venv/bin/python bench/preflight.py [--calls 200] [--database-url URL]

Times `models_app.selectors.model_usage(model=...)` (what GET /api/v1/models/{key}/usage
and the admin's delete confirmation call) in-process, for one installed model, in a
store of 5 and then of 500 installed repos. Each size runs in a fresh process with a
real Hugging Face cache built on disk in a temp dir (tests/hub_cache.py), one registry
Model row per repo, and the Installation rows written by the reconcile
(`models_app.services.store_reconcile()`). It measures whatever model_usage does today.

The database is a fresh SQLite file in the temp dir; with --database-url (PostgreSQL),
Django's test-database machinery creates test_<name> next to the named one and drops it
after, so the named database is never touched.
Goal (issue 9): the 500-repo p50 <= 1.2 x the 5-repo p50 (the cost of one repo's preflight
does not grow with the store).
"""

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SIZES = (5, 500)
GOAL_RATIO = 1.2
# An embedding repo as the hub serves it; README.md is outside the allow-patterns.
REPO_FILES = (
    "config.json",
    "config_sentence_transformers.json",
    "modules.json",
    "special_tokens_map.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "1_Pooling/config.json",
    "model.safetensors",
    "README.md",
)


def child(repos: int, calls: int) -> None:
    """Build the store, seed and reconcile, then time model_usage; print one JSON line."""
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    from django.conf import settings
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from models_app.models import Installation, Model
    from models_app.selectors import model_usage
    from models_app.services import store_reconcile
    from tests.hub_cache import write_snapshot

    for i in range(repos):
        repo_id = f"bench-org/embed-{i:04d}"
        write_snapshot(
            settings.MODELS_HUB_DIR,
            repo_id,
            hashlib.sha1(repo_id.encode()).hexdigest(),
            {
                name: f"{repo_id} {name} ".encode() * (4096 if name.endswith(".safetensors") else 8)
                for name in REPO_FILES
            },
        )
    old_name = connection.creation.create_test_db(verbosity=0, autoclobber=True)
    try:
        Model.objects.bulk_create(
            Model(
                key=f"embed-{i:04d}",
                repo_id=f"bench-org/embed-{i:04d}",
                type="embedding",
                name=f"Embed {i:04d}",
                allow_patterns=["*.json", "*.safetensors"],
                download_size=100_000,
            )
            for i in range(repos)
        )
        store_reconcile()
        # Fresh planner statistics, as autovacuum/analyze would give a live database.
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE")
        installed = Installation.objects.filter(location="primary").count()
        assert installed == repos, f"reconcile installed {installed} of {repos} repos"
        # The middle of the store, not the first folder a scan happens to meet.
        model = Model.objects.get(key=f"embed-{repos // 2:04d}")
        usage = model_usage(model=model)
        assert usage["can_delete"] and usage["bytes_freed"] > 0, usage

        for _ in range(10):  # warm the connection, the OS's directory cache, the imports
            model_usage(model=model)
        timings = []
        for _ in range(calls):
            started = time.perf_counter()
            model_usage(model=model)
            timings.append((time.perf_counter() - started) * 1000)
        with CaptureQueriesContext(connection) as queries:
            model_usage(model=model)
        timings.sort()
        result = {
            "repos": repos,
            "files": repos * len(REPO_FILES),
            "p50": statistics.median(timings),
            "p95": timings[max(0, int(0.95 * len(timings)) - 1)],
            "queries": len(queries),
            "bytes_freed": usage["bytes_freed"],
            "vendor": connection.vendor,
        }
    finally:
        connection.creation.destroy_test_db(old_name, verbosity=0)
    print("RESULT " + json.dumps(result))


def run_child(repos: int, calls: int, database_url: str | None, tmp: Path) -> dict:
    work = tmp / f"store-{repos}"
    env = dict(
        os.environ,
        DJANGO_SETTINGS_MODULE="config.settings",
        DATABASE_URL=database_url or f"sqlite:///{work / 'data' / 'bench.sqlite3'}",
        DATA_DIR=str(work / "data"),
        MODELS_DIR=str(work / "models"),
        LEGACY_HUB_DIR=str(work / "no-legacy-cache"),
        MODEL_REGISTRY_FILES="",
        LOG_LEVEL="WARNING",
    )
    env.pop("REDIS_URL", None)
    out = subprocess.run(
        [sys.executable, __file__, "--child", "--repos", str(repos), "--calls", str(calls)],
        env=env, capture_output=True, text=True, cwd=ROOT, check=False,
    )  # fmt: skip
    if out.returncode:
        sys.exit(f"benchmark child ({repos} repos) failed:\n{out.stdout}\n{out.stderr}")
    line = next(line for line in out.stdout.splitlines() if line.startswith("RESULT "))
    return json.loads(line.removeprefix("RESULT "))


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    parser.add_argument("--calls", type=int, default=200, help="Timed calls per store size.")
    parser.add_argument(
        "--database-url", default=None, help="A PostgreSQL URL; default: a fresh SQLite file."
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--repos", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.repos, args.calls)
        return
    load_before = load_average()
    with tempfile.TemporaryDirectory(prefix="modelyard-preflight-") as tmp:
        results = [run_child(n, args.calls, args.database_url, Path(tmp)) for n in SIZES]
    small, large = results
    print(
        f"Delete usage preflight, models_app.selectors.model_usage, {args.calls} calls per "
        f"store size ({small['vendor']}, {os.cpu_count()} cores)"
    )
    print(f"  {'repos':>6} {'files':>7} {'p50 ms':>9} {'p95 ms':>9} {'queries':>8}")
    for r in results:
        print(
            f"  {r['repos']:>6} {r['files']:>7} {r['p50']:>9.2f} {r['p95']:>9.2f} {r['queries']:>8}"
        )
    ratio = large["p50"] / small["p50"]
    verdict = "ok" if ratio <= GOAL_RATIO else "OVER GOAL"
    print(
        f"  p50 with {large['repos']} repos {large['p50']:.2f} ms = {ratio:.2f} x the p50 with "
        f"{small['repos']} repos ({small['p50']:.2f} ms); goal ratio <= {GOAL_RATIO}: {verdict}"
    )
    print(f"  load average (1, 5, 15 min): {load_before} before, {load_average()} after")


if __name__ == "__main__":
    main()
