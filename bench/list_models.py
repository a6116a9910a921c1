#!/usr/bin/env python
"""Benchmark the models list: 2,000 models / 500 installations / 1,000 collections vs 20 models.

    .venv/bin/python bench/list_models.py [--requests 300] [--postgres URL | --no-postgres]

Runs the full stack (middleware, session auth, ninja, selectors) through Django's test
client against a real database: a fresh SQLite file, then a fresh PostgreSQL database
(default postgres://postgres@127.0.0.1:5432/modelyard_bench, created and dropped here).
Prints p50/p95 latency and query count per scenario, and the 2,000/20 ratio.
Goal (issue 2): p50 <= 30 ms, and the 2,000-model p50 <= 1.5 x the 20-model p50.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = {
    "first page": "/api/v1/models",
    "filtered search": "/api/v1/models?type=embedding&status=installed&search=model+0&sort=-size",
}


def child(requests: int) -> None:
    """Measure in this process, against DATABASE_URL; print one JSON line."""
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext, setup_test_environment
    from django.utils import timezone

    from collections_app.models import Collection
    from models_app.models import Installation, Model

    setup_test_environment()
    call_command("migrate", verbosity=0)
    from django.contrib.auth import get_user_model

    admin = get_user_model().objects.create_superuser("bench", password="x")
    client = Client()
    client.force_login(admin)
    types = ["embedding", "llm", "reranker", "splade"]

    def seed(n_models, n_installed, n_collections):
        Collection.objects.all().delete()
        Installation.objects.all().delete()
        Model.objects.all().delete()
        now = timezone.now()
        Model.objects.bulk_create(
            Model(
                key=f"model-{i:05d}",
                repo_id=f"org{i % 13}/model-{i:05d}",
                type=types[i % 4],
                name=f"Model {i:05d}",
                description="A model seeded for the list benchmark.",
                family=f"family{i % 17}",
                parameter_count=1_000_000 * (i + 1),
                download_size=10_000_000 + i,
                memory_estimates={"float16": 2 * i, "int8": i},
                tags=["bench"],
            )
            for i in range(n_models)
        )
        models = list(Model.objects.order_by("id"))
        Installation.objects.bulk_create(
            Installation(
                model=m, commit_hash="0" * 40, size_on_disk=m.download_size,
                installed_at=now, reconciled_at=now,
            )
            for m in models[:n_installed]
        )  # fmt: skip
        embedders = [m for m in models if m.type == "embedding"]
        Collection.objects.bulk_create(
            Collection(name=f"collection-{i}", embedding_model=embedders[i % len(embedders)])
            for i in range(n_collections)
        )
        # Fresh planner statistics, as autovacuum/analyze would give a live database.
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE")

    results = {}
    for label, sizes in (("20 models", (20, 5, 10)), ("2,000 models", (2000, 500, 1000))):
        seed(*sizes)
        for scenario, url in SCENARIOS.items():
            for _ in range(20):  # warm caches and connections
                assert client.get(url).status_code == 200
            timings = []
            for _ in range(requests):
                started = time.perf_counter()
                response = client.get(url)
                timings.append((time.perf_counter() - started) * 1000)
                assert response.status_code == 200
            with CaptureQueriesContext(connection) as queries:
                client.get(url)
            timings.sort()
            results[f"{label} / {scenario}"] = {
                "p50": statistics.median(timings),
                "p95": timings[int(0.95 * len(timings)) - 1],
                "queries": len(queries),
                "items": len(response.json()["items"]),
            }
    print("RESULT " + json.dumps(results))


def run_child(database_url: str, requests: int) -> dict:
    env = dict(os.environ, DATABASE_URL=database_url)
    out = subprocess.run(
        [sys.executable, __file__, "--child", "--requests", str(requests)],
        env=env, capture_output=True, text=True, cwd=ROOT, check=False,
    )  # fmt: skip
    if out.returncode:
        sys.exit(f"benchmark child failed on {database_url}:\n{out.stdout}\n{out.stderr}")
    line = next(line for line in out.stdout.splitlines() if line.startswith("RESULT "))
    return json.loads(line.removeprefix("RESULT "))


def report(name: str, results: dict) -> None:
    print(f"\n{name}")
    print(f"  {'scenario':<36} {'p50 ms':>8} {'p95 ms':>8} {'queries':>8} {'items':>6}")
    for scenario, r in results.items():
        print(
            f"  {scenario:<36} {r['p50']:>8.2f} {r['p95']:>8.2f} {r['queries']:>8} {r['items']:>6}"
        )
    for scenario in SCENARIOS:
        small, large = results[f"20 models / {scenario}"], results[f"2,000 models / {scenario}"]
        ratio = large["p50"] / small["p50"]
        verdict = "ok" if large["p50"] <= 30 and ratio <= 1.5 else "OVER GOAL"
        print(
            f"  {scenario}: 2,000-model p50 {large['p50']:.2f} ms = {ratio:.2f} x the 20-model "
            f"p50 ({small['p50']:.2f} ms); goal p50 <= 30 ms and ratio <= 1.5: {verdict}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--postgres", default="postgres://postgres@127.0.0.1:5432/modelyard_bench")
    parser.add_argument("--no-postgres", action="store_true")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.requests)
        return
    with tempfile.TemporaryDirectory() as tmp:
        report("SQLite", run_child(f"sqlite:///{tmp}/bench.sqlite3", args.requests))
    if not args.no_postgres:
        import psycopg

        admin_url = args.postgres.rsplit("/", 1)[0] + "/postgres"
        name = args.postgres.rsplit("/", 1)[1]
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
            conn.execute(f'CREATE DATABASE "{name}"')
        try:
            report("PostgreSQL", run_child(args.postgres, args.requests))
        finally:
            with psycopg.connect(admin_url, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    main()
