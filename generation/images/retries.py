"""Worker middleware: retries on a fixed schedule without jitter, and the claim a failed message held."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any
from uuid import UUID

import dramatiq
from dramatiq.broker import MessageProxy
from dramatiq.middleware import CurrentMessage, Middleware

logger = logging.getLogger(__name__)

# The message option in which an actor records the claim token of the job it works on.
CLAIM_OPTION = "claim_token"

RetryHook = Callable[[MessageProxy, float, BaseException], bool]
GiveUpHook = Callable[[MessageProxy, BaseException], None]


class BackoffRetries(Middleware):
    """Re-enqueue a failed message after the next delay of its actor's schedule; hand it over when none is left.

    Actor options (named apart from Dramatiq's own ``retry_when`` and ``on_retry_exhausted``, which mean other
    things):
      backoff_delays: seconds before retry 1, 2, 3, ... (a sequence, or a callable returning one, read at each
        failure so that settings apply without a restart); no retries when absent.
      backoff_retry_on: exception types worth retrying (default: any exception).
      backoff_on_retry: called as ``backoff_on_retry(message, delay, exception)`` before the message is
        re-enqueued; it records the retry and returns False when the work is no longer this message's (another
        worker took it over), in which case the message is dropped.
      backoff_on_give_up: called as ``backoff_on_give_up(message, exception)`` when the schedule is used up or
        the exception is not retryable.

    Dramatiq's stock Retries adds jitter that turns a 5 s backoff into anything from 5 to 10 s and has no
    hook to record a retry on the job, which is why this replaces it.
    """

    actor_options = {"backoff_delays", "backoff_retry_on", "backoff_on_retry", "backoff_on_give_up"}

    def after_process_message(
        self, broker: dramatiq.Broker, message: MessageProxy, *, result: Any = None, exception: Any = None
    ) -> None:
        if exception is None:
            return
        options = broker.get_actor(message.actor_name).options
        delays = self._delays(options.get("backoff_delays", ()))
        attempt = int(message.options.get("retries", 0))
        retryable = isinstance(exception, options.get("backoff_retry_on", Exception))
        if not retryable or attempt >= len(delays):
            logger.warning("message %s of %s failed for good: %r", message.message_id, message.actor_name, exception)
            message.fail()
            give_up: GiveUpHook | None = options.get("backoff_on_give_up")
            if give_up is not None:
                give_up(message, exception)
            return
        delay = delays[attempt]
        on_retry: RetryHook | None = options.get("backoff_on_retry")
        if on_retry is not None:
            # The hook records the retry first: should the enqueue below fail, the job still says when it is due.
            try:
                if not on_retry(message, delay, exception):
                    logger.info("message %s is no longer in charge of its work; not retried", message.message_id)
                    message.fail()
                    return
            except Exception:
                # The database may be down: the message is re-enqueued all the same, and its claim sorts it out.
                logger.exception("could not record retry %d of message %s", attempt + 1, message.message_id)
        logger.info("retrying message %s in %.1f s (retry %d)", message.message_id, delay, attempt + 1)
        retry = message.copy()
        retry.options["retries"] = attempt + 1
        retry.options.pop(CLAIM_OPTION, None)
        broker.enqueue(retry, delay=int(delay * 1000))

    @staticmethod
    def _delays(option: Sequence[float] | Callable[[], Sequence[float]]) -> Sequence[float]:
        return option() if callable(option) else option


def message_claim_record(token: UUID) -> None:
    """Note on the message being processed the claim its actor holds, for the retry hooks to name."""
    message = CurrentMessage.get_current_message()
    if message is not None:
        message.options[CLAIM_OPTION] = str(token)


def message_claim(message: MessageProxy) -> UUID | None:
    """The claim the message's actor held when it failed, if it recorded one."""
    token = message.options.get(CLAIM_OPTION)
    return UUID(token) if token else None
