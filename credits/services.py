"""Every change of a credit balance: each writes the balance and its ledger entry in one transaction."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, TypedDict, Unpack

from django.db import connection, transaction
from django.db.transaction import TransactionManagementError
from django.utils import timezone
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


def _entry_record(
    *,
    account_id: int,
    user_id: int,
    balance: int,
    kind: str,
    amount: int,
    job_id: UUID | None = None,
    note: str = "",
    created_by: User | None = None,
) -> CreditLedgerEntry:
    """Insert the ledger entry of a balance change already written, and tell the owner the new balance on commit."""
    transaction.on_commit(
        lambda: event_append(user_id=user_id, event="credits", data={"balance": balance}), robust=True
    )
    return CreditLedgerEntry.objects.create(
        account_id=account_id,
        kind=kind,
        amount=amount,
        balance_after=balance,
        job_id=job_id,
        note=note,
        created_by=created_by,
    )


class _EntryFields(TypedDict, total=False):
    """What a ledger entry may carry besides its kind and amount (``_entry_record``'s optional arguments)."""

    job_id: UUID | None
    note: str
    created_by: User | None


def _ledger_append(
    *, account: CreditAccount, kind: str, amount: int, **entry: Unpack[_EntryFields]
) -> CreditLedgerEntry:
    """Change a locked account's balance and record the entry."""
    account.balance += amount
    account.save(update_fields=["balance", "updated_at"])
    return _entry_record(
        account_id=account.pk, user_id=account.user_id, balance=account.balance, kind=kind, amount=amount, **entry
    )


def _account_spend(*, user_id: int, amount: int) -> tuple[int, int] | None:
    """Take ``amount`` from the user's account if it holds that much, in one statement that also takes the row lock;
    the account's id and new balance, or None when it does not (or there is no account)."""
    # The ORM's update() cannot return the new balance, and the charge is on every create request's path: one
    # statement here instead of a SELECT ... FOR UPDATE and an UPDATE.
    table = CreditAccount._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {table} SET balance = balance - %s, updated_at = %s"
            " WHERE user_id = %s AND balance >= %s RETURNING id, balance",
            [amount, timezone.now(), user_id, amount],
        )
        row = cursor.fetchone()
    return (row[0], row[1]) if row else None


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

    Call it inside the transaction that creates the job: a savepoint of its own would cost two round trips per job
    and protect nothing, and outside one the ledger entry could be lost after the balance changed.
    """
    if not connection.in_atomic_block:
        raise TransactionManagementError("credit_charge must run inside the transaction that creates the job")
    spent = _account_spend(user_id=user_id, amount=amount)
    if spent is not None:
        account_id, balance = spent
        kind = CreditLedgerEntry.Kind.CHARGE
        return _entry_record(
            account_id=account_id, user_id=user_id, balance=balance, kind=kind, amount=-amount, job_id=job_id
        )
    # Short of credits, or no account yet: under the lock, the balance the refusal names is the one that counts.
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
