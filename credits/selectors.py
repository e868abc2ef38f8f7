"""Reads of credit balances and ledgers."""

from __future__ import annotations

from django.db.models import F, QuerySet, Sum, Window
from django.db.models.functions import Coalesce

from credits.models import CreditAccount, CreditLedgerEntry


def credit_balance(*, user_id: int) -> int:
    """The user's balance, zero when the user has no account yet."""
    account = CreditAccount.objects.filter(user_id=user_id).only("balance").first()
    return account.balance if account else 0


def credit_ledger(*, user_id: int) -> QuerySet[CreditLedgerEntry]:
    """The user's ledger entries, newest first."""
    return CreditLedgerEntry.objects.filter(account__user_id=user_id).order_by("-id")


def credit_ledger_total(*, user_id: int) -> int:
    """The sum of the user's ledger entries, which must equal the balance."""
    return credit_ledger(user_id=user_id).aggregate(total=Sum("amount"))["total"] or 0


def credit_audit() -> list[str]:
    """Every disagreement between balances and their ledgers, one line each (the jobs' side is generation's)."""
    # Each check is a single statement and so reads one snapshot: writes made meanwhile cannot raise a false alarm.
    problems: list[str] = []
    accounts = (
        CreditAccount.objects.annotate(ledger_total=Coalesce(Sum("entries__amount"), 0))
        .exclude(balance=F("ledger_total"))
        .values("user__username", "balance", "ledger_total")
        .order_by("id")
    )
    for account in accounts:
        problems.append(
            f"{account['user__username']}: balance {account['balance']} but the ledger sums to "
            f"{account['ledger_total']} (difference {account['balance'] - account['ledger_total']:+d})"
        )
    entries = (
        CreditLedgerEntry.objects.annotate(
            running_total=Window(Sum("amount"), partition_by=[F("account_id")], order_by=F("id").asc())
        )
        .exclude(balance_after=F("running_total"))
        .values("id", "account__user__username", "kind", "balance_after", "running_total")
        .order_by("id")
    )
    for entry in entries:
        problems.append(
            f"{entry['account__user__username']}: ledger entry {entry['id']} ({entry['kind']}) records a balance of "
            f"{entry['balance_after']} but the entries up to it sum to {entry['running_total']} "
            f"(difference {entry['balance_after'] - entry['running_total']:+d})"
        )
    return problems
