"""The credit ledger after a run: each job charged once and refunded exactly as expected."""

from __future__ import annotations

from credits.models import CreditLedgerEntry
from credits.selectors import credit_audit, credit_balance, credit_ledger_total
from generation.models import Job
from generation.selectors import job_credit_audit


def assert_ledger_exact(refunds: dict[Job, int], *, granted: int) -> None:
    """Each job was charged once and refunded exactly as given; every balance is its ledger's sum, ``granted``
    less what the jobs kept."""
    assert credit_audit() + job_credit_audit() == []
    for job, refund in refunds.items():
        refunded = CreditLedgerEntry.objects.filter(job=job, kind=CreditLedgerEntry.Kind.REFUND)
        assert sum(entry.amount for entry in refunded) == refund, job.prompt
    for user_id in {job.user_id for job in refunds}:
        spent = sum(job.credit_cost - refund for job, refund in refunds.items() if job.user_id == user_id)
        assert credit_balance(user_id=user_id) == credit_ledger_total(user_id=user_id) == granted - spent
