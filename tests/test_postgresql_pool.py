"""A web process's connection pool after its server connections died (config/postgresql).

The local PostgreSQL stays up: pg_terminate_backend cuts the pool's idle connections the
way a restart does (the same "terminating connection" message on every socket).
"""

import itertools
import time

import pytest
from django.db import connection
from django.db.backends.postgresql import base as django_postgresql

from tests.processes import backends_terminate, wait_until

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.django_db,
    pytest.mark.skipif(connection.vendor != "postgresql", reason="the pool is PostgreSQL's"),
]

_aliases = itertools.count()


def pooled_wrapper(wrapper_class, *, max_size: int):
    """A second connection to the test database, from a pool of its own, as a web process has."""
    settings_dict = {
        **connection.settings_dict,
        "CONN_MAX_AGE": 0,
        "CONN_HEALTH_CHECKS": True,
        "OPTIONS": {
            **connection.settings_dict["OPTIONS"],
            "pool": {"min_size": 1, "max_size": max_size, "timeout": 20},
        },
    }
    return wrapper_class(settings_dict, alias=f"pool-probe-{next(_aliases)}")


def pool_with_dead_connections(wrapper, n: int) -> None:
    """Fill the wrapper's pool with `n` idle connections, then terminate their backends."""

    pool = wrapper.pool
    pool.open(wait=True, timeout=10)
    held = [pool.getconn() for _ in range(n)]
    pids = [conn.info.backend_pid for conn in held]
    for conn in held:
        pool.putconn(conn)
    wait_until(
        lambda: pool.get_stats()["pool_available"] >= n,
        timeout=10, what="the connections back in the pool",
    )  # fmt: skip
    backends_terminate(pids)


def first_query_seconds(wrapper) -> float:
    began = time.monotonic()
    with wrapper.cursor() as cursor:
        cursor.execute("SELECT 1")
        assert cursor.fetchone() == (1,)
    return time.monotonic() - began


@pytest.fixture
def close_pools():
    wrappers = []
    yield wrappers.append
    for wrapper in wrappers:
        wrapper.close()
        wrapper.close_pool()


def test_a_pool_of_dead_connections_gives_a_fresh_one_at_once(close_pools):
    from config.postgresql.base import DatabaseWrapper

    wrapper = pooled_wrapper(DatabaseWrapper, max_size=8)
    close_pools(wrapper)
    pool_with_dead_connections(wrapper, 8)
    seconds = first_query_seconds(wrapper)
    assert seconds < 1.5, f"the first query after the connections died took {seconds:.2f} s"
    # The sweep dropped every dead one: the next requests get working connections too.
    held = [wrapper.pool.getconn(timeout=5) for _ in range(4)]
    try:
        for conn in held:
            conn.execute("SELECT 1")
    finally:
        for conn in held:
            wrapper.pool.putconn(conn)


def test_djangos_own_pool_waits_between_dead_connections(close_pools):
    """Why config/postgresql exists: the stock pool backs off 0, 1, 2 s over 3 dead ones.

    If this fails, psycopg_pool no longer backs off and the backend may be dropped.
    """
    wrapper = pooled_wrapper(django_postgresql.DatabaseWrapper, max_size=3)
    close_pools(wrapper)
    pool_with_dead_connections(wrapper, 3)
    assert first_query_seconds(wrapper) >= 2.5
