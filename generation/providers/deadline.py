"""One total wall-clock deadline for an outbound HTTP call: connecting, the answer, its body and every redirect.

requests and urllib3 only bound each operation: a connect, or one wait for bytes. A server that sends a byte just
inside that wait, headers or body, holds the caller for as long as it likes, and Python offers no way to interrupt
a thread blocked in ``recv``. So this is hand-written, in three parts:

- ``Deadline`` is a watchdog: a ``threading.Timer`` that, when the time is up, calls ``shutdown(SHUT_RDWR)`` on every
  socket opened for the call. A blocked ``recv`` then returns at once, and urllib3 reports a closed connection (or,
  reading a body, sometimes a clean end of it). A socket opened after that is shut as soon as it is opened.
- ``DeadlineAdapter`` gives each connection pool it hands out a connection class whose ``_new_conn`` registers the
  new socket with the watchdog, and caps the per-operation timeouts of every request it sends, redirects included,
  at the time left.
- ``bounded_session`` makes a fresh session for one call, so its pools, and the sockets in them, belong to that
  call's deadline alone.

The watchdog keeps a duplicate of each socket's descriptor rather than the socket object: wrapping a socket in TLS
detaches the object from its descriptor, and shutting down an ``SSLSocket`` from another thread would change its
state under the reading thread, whereas ``shutdown`` on a duplicate acts on the connection both descriptors share.
The duplicates are closed when the call ends.

The watchdog cannot interrupt name resolution, which ``getaddrinfo`` does in the calling thread; the resolver's own
timeouts bound that. Callers ask ``deadline.expired`` when a request fails, to report a timeout rather than a
broken connection, and call ``deadline.check()`` once the body is read, since a body cut short by the watchdog can
look complete.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator, Mapping
from types import TracebackType
from typing import Any, Self

import requests
from requests.adapters import HTTPAdapter
from requests.models import PreparedRequest, Response
from urllib3.connection import HTTPConnection
from urllib3.connectionpool import ConnectionPool, HTTPConnectionPool

Timeout = float | tuple[float, float] | tuple[float, None] | None


class DeadlineExceeded(requests.exceptions.Timeout):
    """The call's total deadline passed before it finished."""


class Deadline:
    """A point in time after which every socket registered for the call is shut down."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._ends_at = time.monotonic() + seconds
        # Guards the registered sockets and the fired flag between the calling thread and the timer's.
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._fired = False
        self._timer = threading.Timer(seconds, self._fire)
        self._timer.daemon = True

    def __enter__(self) -> Self:
        self._timer.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self._timer.cancel()
        # A watchdog already firing finishes before the duplicates close, so it never shuts a descriptor reused since.
        self._timer.join()
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for duplicate in sockets:
            duplicate.close()

    @property
    def expired(self) -> bool:
        """Whether the deadline has passed, and so whether a failed or cut-short request is down to it."""
        return self._fired or time.monotonic() >= self._ends_at

    def remaining(self) -> float:
        """The seconds left before the deadline, never negative."""
        return max(0.0, self._ends_at - time.monotonic())

    def check(self) -> None:
        """Raise ``DeadlineExceeded`` when the deadline has passed; call it once a body is read."""
        if self.expired:
            raise DeadlineExceeded(f"The call did not finish within {self.seconds:g} s.")

    def cap(self, timeout: Timeout) -> float | tuple[float, float]:
        """Return ``timeout`` (one value or a connect and read pair) with each part cut to the time left."""
        remaining = self.remaining()
        if remaining <= 0:
            raise DeadlineExceeded(f"The call did not finish within {self.seconds:g} s.")
        if isinstance(timeout, tuple):
            connect, read = timeout
            return (min(connect, remaining), remaining if read is None else min(read, remaining))
        return remaining if timeout is None else min(timeout, remaining)

    def watch(self, sock: socket.socket) -> None:
        """Have the watchdog shut ``sock`` down at the deadline, or at once if the deadline has passed."""
        try:
            duplicate = sock.dup()
        except OSError:
            sock.close()
            raise
        with self._lock:
            if not self._fired:
                self._sockets.append(duplicate)
                return
        _shut(duplicate)
        duplicate.close()

    def _fire(self) -> None:
        with self._lock:
            # Set before shutting anything down, so that an error the shutdown causes finds the deadline expired.
            self._fired = True
            sockets = list(self._sockets)
        for duplicate in sockets:
            _shut(duplicate)


class _WatchedConnection(HTTPConnection):
    """Mixed into a pool's connection class: registers each new socket with the deadline set on the subclass."""

    deadline: Deadline

    def _new_conn(self) -> socket.socket:
        sock = super()._new_conn()
        self.deadline.watch(sock)
        return sock


class DeadlineAdapter(HTTPAdapter):
    """A transport adapter whose connections and requests are all bounded by one ``Deadline``."""

    def __init__(self, *, deadline: Deadline, **options: Any) -> None:
        self.deadline = deadline
        # One watched subclass per connection class the pools use: HTTP, HTTPS, or a proxy's.
        self._watched_classes: dict[type, type] = {}
        super().__init__(**options)

    def get_connection_with_tls_context(self, *args: Any, **kwargs: Any) -> ConnectionPool:
        return self.watch(super().get_connection_with_tls_context(*args, **kwargs))

    def watch(self, pool: ConnectionPool) -> ConnectionPool:
        """Make every connection ``pool`` opens from now on register its socket with the deadline.

        A subclass that builds its pools itself, rather than through this adapter's
        ``get_connection_with_tls_context``, passes each through here.
        """
        if isinstance(pool, HTTPConnectionPool) and not issubclass(pool.ConnectionCls, _WatchedConnection):
            base = pool.ConnectionCls
            if base not in self._watched_classes:
                self._watched_classes[base] = type(
                    f"Watched{base.__name__}", (_WatchedConnection, base), {"deadline": self.deadline}
                )
            pool.ConnectionCls = self._watched_classes[base]
        return pool

    def send(
        self,
        request: PreparedRequest,
        stream: bool = False,
        timeout: Timeout = None,
        verify: bool | str = True,
        cert: bytes | str | tuple[bytes | str, bytes | str] | None = None,
        proxies: Mapping[str, str] | None = None,
    ) -> Response:
        return super().send(
            request, stream=stream, timeout=self.deadline.cap(timeout), verify=verify, cert=cert, proxies=proxies
        )


class BoundedSession(requests.Session):
    """A requests session whose every request shares the one ``deadline``."""

    def __init__(self, *, deadline: Deadline, adapter: DeadlineAdapter) -> None:
        super().__init__()
        self.deadline = deadline
        self.mount("http://", adapter)
        self.mount("https://", adapter)


@contextlib.contextmanager
def bounded_session(
    seconds: float, *, adapter_class: type[DeadlineAdapter] = DeadlineAdapter
) -> Iterator[BoundedSession]:
    """Yield a fresh session for one call whose connects, answers, bodies and redirects end within ``seconds``."""
    with (
        Deadline(seconds) as deadline,
        BoundedSession(deadline=deadline, adapter=adapter_class(deadline=deadline)) as session,
    ):
        yield session


def _shut(sock: socket.socket) -> None:
    # The connection may have been closed already by the peer or by urllib3, which is just as good.
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
