"""Django's ASGI handler, with the thread hand-offs of a request cut to what a synchronous project needs."""

from __future__ import annotations

import contextlib
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from asgiref.sync import ThreadSensitiveContext, sync_to_async
from django.core.handlers.asgi import ASGIHandler

# Request threads kept waiting for the next request; a burst beyond this many at once starts threads that end after.
IDLE_REQUEST_THREADS = 32


def _done() -> None:
    """Submitted after a request's work: it runs once anything still on the thread has finished."""


class RequestThreadsASGIHandler(ASGIHandler):
    """Django's ASGI handler for a project whose middlewares and views are all synchronous.

    - **One hand-off per request.** Django builds the chain in async mode, so each boundary is adapted on its own:
      into a thread for the middlewares, back to the event loop below WhiteNoise (synchronous only), into the thread
      again for each view middleware's ``process_view`` and for the view. Built in sync mode and entered once, the
      chain runs as it does under WSGI, in the request's thread.
    - **Request threads are reused.** Django gives each request a thread of its own (a ``ThreadSensitiveContext``),
      starting one and joining it, through one more thread, for every request. Here each request borrows an idle
      single-thread executor and gives it back once nothing of the request is left on it, so that the next
      borrower never queues behind it (a view whose client left runs to its end, and Django's request_finished
      signal after it, on that thread).
    """

    def __init__(self) -> None:
        # The request threads waiting for the next request, each a single-thread executor.
        self.idle_threads: list[ThreadPoolExecutor] = []
        super().__init__()

    def load_middleware(self, is_async: bool = False) -> None:
        super().load_middleware(is_async=False)
        chain = getattr(self, "_middleware_chain")  # noqa: B009 (django-stubs leave the attribute untyped)
        self._middleware_chain = sync_to_async(chain, thread_sensitive=True)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        try:
            executor = self.idle_threads.pop()
        except IndexError:
            executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="request")
        try:
            # Django's own context inside is then a no-op: only the outermost one picks the thread.
            async with ThreadSensitiveContext(executor=executor):
                await super().__call__(scope, receive, send)
        finally:
            # Runs once everything the request left on the thread has run; refused only while the process exits.
            with contextlib.suppress(RuntimeError):
                executor.submit(_done).add_done_callback(lambda _: self._give_back(executor))

    def _give_back(self, executor: ThreadPoolExecutor) -> None:
        # Runs on the executor's own thread (list operations are atomic): it must not wait for itself to end.
        if len(self.idle_threads) < IDLE_REQUEST_THREADS:
            self.idle_threads.append(executor)
        else:
            executor.shutdown(wait=False)
