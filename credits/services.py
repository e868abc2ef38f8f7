"""Every change of a credit balance: each writes the balance and its ledger entry in one transaction."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from django.db import transaction
from django.utils.translation import gettext as _

from core.events.publish import event_append
from credits.errors import InsufficientCredits
from credits.models import CreditAccount, CreditLedgerEntry

if TYPE_CHECKING:
    from uuid import UUID

    from django.contrib.auth.models import User


logger = logging.getLogger(__name__)


def credit_account_lock(*, user_id: int) -> CreditAccount:
    """Return the user's account locked for this transaction, creating it at zero when missing."""
    # The lock serialises every balance change of this user until the transaction ends. Accounts almost always
    # exist, so one query is tried first; get_or_create then copes with two first requests racing to create one.
    try:
        return CreditAccount.objects.select_for_update().get(user_id=user_id)
    except CreditAccount.DoesNotExist:
        CreditAccount.objects.get_or_create(user_id=user_id)
        return CreditAccount.objects.select_for_update().get(user_id=user_id)


def _ledger_append(
    *,
    account: CreditAccount,
    kind: str,
    amount: int,
    job_id: UUID | None = None,
    note: str = "",
    created_by: User | None = None,
) -> CreditLedgerEntry:
    account.balance += amount
    account.save(update_fields=["balance", "updated_at"])
    balance = account.balance
    user_id = account.user_id
    transaction.on_commit(
        lambda: event_append(user_id=user_id, event="credits", data={"balance": balance}), robust=True
    )
    return CreditLedgerEntry.objects.create(
        account=account,
        kind=kind,
        amount=amount,
        balance_after=account.balance,
        job_id=job_id,
        note=note,
        created_by=created_by,
    )


@transaction.atomic(durable=True)
def credit_grant(*, user_id: int, amount: int, note: str = "", created_by: User | None = None) -> CreditLedgerEntry:
    """Add credits to a user's account."""
    if amount <= 0:
        raise ValueError("a grant must be positive")
    account = credit_account_lock(user_id=user_id)
    entry = _ledger_append(
        account=account, kind=CreditLedgerEntry.Kind.GRANT, amount=amount, note=note, created_by=created_by
    )
    logger.info("granted %d credits to user %s, balance %d", amount, user_id, account.balance)
    return entry


def credit_charge(*, user_id: int, amount: int, job_id: UUID) -> CreditLedgerEntry:
    """Take a job's cost from its owner's account, or raise InsufficientCredits before writing anything.

    Call it inside the transaction that creates the job (the account lock refuses to run outside one): a
    savepoint of its own would cost two round trips per job and protect nothing.
    """
    account = credit_account_lock(user_id=user_id)
    if account.balance < amount:
        raise InsufficientCredits(
            _("This request costs %(cost)d credits and the balance is %(balance)d.")
            % {"cost": amount, "balance": account.balance},
            extra={"cost": amount, "balance": account.balance},
        )
    return _ledger_append(account=account, kind=CreditLedgerEntry.Kind.CHARGE, amount=-amount, job_id=job_id)


def credit_refund(*, user_id: int, job_id: UUID, amount: int, note: str = "") -> CreditLedgerEntry | None:
    """Give back part or all of a job's charge; a job is refunded at most once.

    Call it inside the transaction that ends the job (the account lock refuses to run outside one), so that
    the refund and the job's end commit together."""
    if amount <= 0:
        return None
    account = credit_account_lock(user_id=user_id)
    if CreditLedgerEntry.objects.filter(job_id=job_id, kind=CreditLedgerEntry.Kind.REFUND).exists():
        return None
    entry = _ledger_append(account=account, kind=CreditLedgerEntry.Kind.REFUND, amount=amount, job_id=job_id, note=note)
    logger.info("refunded %d credits for job %s, balance %d", amount, job_id, account.balance)
    return entry
