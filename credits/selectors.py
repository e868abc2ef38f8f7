"""Reads of credit balances and ledgers."""

from __future__ import annotations

from django.db.models import F, Q, QuerySet, Sum, Window
from django.db.models.functions import Coalesce

from credits.models import CreditAccount, CreditLedgerEntry
from generation.models import Job


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
    """Every disagreement between balances, their ledgers and the jobs' charges and refunds, one line each."""
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
    charges = Q(ledger_entries__kind=CreditLedgerEntry.Kind.CHARGE)
    refunds = Q(ledger_entries__kind=CreditLedgerEntry.Kind.REFUND)
    jobs = (
        Job.objects.annotate(
            charged=Coalesce(Sum("ledger_entries__amount", filter=charges), 0),
            refunded=Coalesce(Sum("ledger_entries__amount", filter=refunds), 0),
        )
        .values("id", "user__username", "status", "credit_cost", "charged", "refunded")
        .order_by("created_at", "id")
    )
    for job in jobs.iterator(chunk_size=2000):
        who = f"{job['user__username']}: job {job['id']}"
        if job["charged"] != -job["credit_cost"]:
            problems.append(f"{who} costs {job['credit_cost']} but was charged {-job['charged']}")
        if job["refunded"] > job["credit_cost"]:
            problems.append(f"{who} was refunded {job['refunded']}, more than its cost of {job['credit_cost']}")
        if job["refunded"] and job["status"] not in Job.FINISHED_STATUSES:
            problems.append(f"{who} was refunded {job['refunded']} while still {job['status']}")
    return problems
