"""Django's PostgreSQL backend, its connection pool swept whole when one connection is broken.

Why: after a PostgreSQL restart every idle connection of a web process's pool is broken.
psycopg_pool's `getconn` checks the connection it hands out; on a failed check it
discards that one and waits before checking the next: 0, 1, 2, 4, 8, 16 s. A pool of 8
broken connections made the first request after a restart wait out DB_POOL_TIMEOUT (30 s)
and answer 500; without the check, the 8 requests that drew them answered 500 at once.

Here a failed check runs the pool's own `check()` before it reports the failure: every
idle connection is tried in that one pass (a broken one fails at once: the server's
"terminating connection" message is already on its socket), the broken ones are
replaced, the healthy ones stay. The loop in `getconn` then takes a healthy or a new
connection on its next turn, which comes without a wait (its first retry does not
sleep). If the server is still away, the request waits for a new connection up to the
pool's timeout, as before.

The pool is built as Django's is (the same options, its `configure`); only the class
and its check differ. Selected by ENGINE "config.postgresql" (config/settings.py, for the
web processes that use a pool).
"""

from __future__ import annotations

import logging

from django.core.exceptions import ImproperlyConfigured
from django.db.backends.base.base import NO_DB_ALIAS
from django.db.backends.postgresql import base
from psycopg_pool import ConnectionPool

logger = logging.getLogger(__name__)


class SweptPool(ConnectionPool):
    """A ConnectionPool whose getconn check, on a broken connection, checks every idle one."""

    def __init__(self, *args, checked: bool = True, **kwargs):
        super().__init__(*args, check=self.check_or_sweep if checked else None, **kwargs)

    def check_or_sweep(self, conn) -> None:
        try:
            self.check_connection(conn)
        except Exception:
            logger.warning("a pooled connection is broken: checking every idle connection")
            self.check()
            raise


class DatabaseWrapper(base.DatabaseWrapper):
    @property
    def pool(self):
        options = self.settings_dict["OPTIONS"].get("pool")
        if self.alias == NO_DB_ALIAS or not options:
            return None
        if self.alias not in self._connection_pools:
            if self.settings_dict.get("CONN_MAX_AGE", 0) != 0:
                raise ImproperlyConfigured("Pooling doesn't support persistent connections.")
            connect_kwargs = self.get_connection_params()
            connect_kwargs["autocommit"] = True  # Django sets the connection's own later
            pool = SweptPool(
                kwargs=connect_kwargs,
                open=False,
                configure=self._configure_connection,
                checked=self.settings_dict["CONN_HEALTH_CHECKS"],
                **({} if options is True else options),
            )
            # The first of several threads building one at once wins (as in Django).
            self._connection_pools.setdefault(self.alias, pool)
        return self._connection_pools[self.alias]
