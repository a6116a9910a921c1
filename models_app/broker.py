"""django-q2's ORM broker with a doorbell: a task queued on this host wakes its clusters at once.

The ORM broker finds work by polling the OrmQ table every Q_CLUSTER["poll"] seconds: a
download queued just after a poll waited up to a whole period before a worker took it, and
every period costs the pusher a query while nothing is queued. Here each cluster's pusher
also listens on a Unix datagram socket in a directory named for its queue (the database and
the queue's name); `enqueue`, once the task's row is committed, sends one byte to every
socket there, and the pusher's wait between polls ends as soon as a byte comes. The poll
stays as the fallback for what no bell announces (a task queued on another host, a claim
whose lock ran out), so it can be slow. Where Unix datagram sockets do not exist (Windows)
or the directory cannot be used, the broker polls as django-q2's does.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import select
import socket
import tempfile
import time
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from django_q.brokers.orm import ORM
from django_q.conf import Conf

logger = logging.getLogger(__name__)

SUFFIX = ".sock"


def bell_directory(list_key: str, database: dict | None = None) -> Path:
    """Return the directory of the bells of one queue: its database's identity and its name."""
    database = database or settings.DATABASES[Conf.ORM]
    identity = "|".join(str(database.get(key) or "") for key in ("ENGINE", "NAME", "HOST", "PORT"))
    digest = hashlib.sha256(f"{identity}|{list_key}".encode()).hexdigest()[:16]
    # Short on purpose: a Unix socket's path has room for about 100 bytes.
    return Path(tempfile.gettempdir()) / f"modelyard-q-{digest}"


class Doorbell:
    """One queue's bells: `listen` in a pusher, `ring` wherever a task is queued."""

    def __init__(self, directory: Path):
        self.directory = directory
        self._socket: socket.socket | None = None
        self._path: Path | None = None
        self.tried = False  # listen() ran: a bell that cannot be made is not tried again

    @property
    def listening(self) -> bool:
        return self._socket is not None

    def listen(self) -> bool:
        """Bind this process's bell; return False (the caller polls) where that cannot be."""
        self.tried = True
        if not hasattr(socket, "AF_UNIX"):
            return False
        path = self.directory / f"{os.getpid()}{SUFFIX}"
        try:
            self.directory.mkdir(mode=0o700, exist_ok=True)
            with contextlib.suppress(FileNotFoundError):
                path.unlink()  # a bell left by an earlier process with this pid
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            try:
                sock.bind(str(path))
            except OSError:
                sock.close()
                raise
        except OSError as exc:
            logger.warning("no doorbell in %s (%s): the queue is polled", self.directory, exc)
            return False
        sock.setblocking(False)
        self._socket, self._path = sock, path
        return True

    def drain(self) -> None:
        """Forget the rings so far: a ring after this is for a task a query now may miss."""
        while self._socket is not None:
            try:
                self._socket.recv(64)
            except (BlockingIOError, InterruptedError):
                return

    def wait(self, timeout: float) -> bool:
        """Sleep until a ring or `timeout`; return whether it rang."""
        if self._socket is None:
            time.sleep(timeout)
            return False
        readable, _, _ = select.select([self._socket], [], [], timeout)
        self.drain()
        return bool(readable)

    def ring(self) -> int:
        """Wake every pusher listening on this queue; return how many were rung.

        A bell whose process is gone (the socket file refuses) is removed; a bell whose
        buffer is full has rung already.
        """
        if not hasattr(socket, "AF_UNIX"):
            return 0
        try:
            paths = [p for p in self.directory.iterdir() if p.name.endswith(SUFFIX)]
        except OSError:  # no pusher has listened on this host
            return 0
        rung = 0
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sender:
            sender.setblocking(False)
            for path in paths:
                try:
                    sender.sendto(b"!", str(path))
                    rung += 1
                except (ConnectionRefusedError, FileNotFoundError):
                    with contextlib.suppress(OSError):
                        path.unlink()
                except BlockingIOError:
                    rung += 1
                except OSError:  # another user's bell, a path too long: that pusher polls
                    continue
        return rung

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None
            with contextlib.suppress(OSError):
                self._path.unlink()


class DoorbellORM(ORM):
    """The ORM broker, woken by a bell where django-q2's sleeps a whole poll."""

    def __init__(self, list_key: str | None = None):
        super().__init__(list_key=list_key)
        self._bell: Doorbell | None = None
        self._bell_pid: int | None = None

    def doorbell(self) -> Doorbell:
        # The cluster makes its broker before it forks the pusher: each process has its own.
        if self._bell is None or self._bell_pid != os.getpid():
            self._bell = Doorbell(bell_directory(self.list_key))
            self._bell_pid = os.getpid()
        return self._bell

    def enqueue(self, task):
        pk = super().enqueue(task)
        # Inside a transaction the row is not visible until it commits: ring then.
        transaction.on_commit(self.doorbell().ring, using=Conf.ORM)
        return pk

    def dequeue(self):
        bell = self.doorbell()
        if not bell.tried:
            bell.listen()
        bell.drain()
        claimed = self._claim()
        if claimed:
            return claimed
        bell.wait(Conf.POLL)
        return None

    def _claim(self) -> list[tuple[int, str]]:
        """Lock the queue's waiting tasks for this cluster (django-q2's ORM dequeue)."""
        claimed = []
        waiting = self.get_connection().filter(key=self.list_key, lock__lt=timezone.now())
        for task in waiting[: Conf.BULK]:
            # Another cluster that was faster locked the row first: not ours.
            if (
                self.get_connection()
                .filter(id=task.id, lock=task.lock)
                .update(lock=self.timeout(task))
            ):
                claimed.append((task.pk, task.payload))
        return claimed
