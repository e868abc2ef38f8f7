"""Credit services: grants, charges and refunds keep the ledger equal to the balance."""

from __future__ import annotations

import pytest
from django.core.management import call_command
from django.db import DatabaseError, IntegrityError, transaction
from django.db.transaction import TransactionManagementError

from credits.errors import InsufficientCredits
from credits.models import CreditLedgerEntry
from credits.selectors import credit_balance, credit_ledger_total
from credits.services import credit_charge, credit_grant, credit_refund
from testing.factories import ImageJobFactory

pytestmark = pytest.mark.django_db


def test_grant_adds_to_balance_and_ledger(make_user):
    user = make_user()
    credit_grant(user_id=user.pk, amount=7)
    credit_grant(user_id=user.pk, amount=5)
    assert credit_balance(user_id=user.pk) == 12
    assert credit_ledger_total(user_id=user.pk) == 12


def test_charge_takes_the_job_cost_and_records_it(make_user):
    user = make_user(credits=10)
    job = ImageJobFactory.create(user=user, quantity=3, credit_cost=3)
    entry = credit_charge(user_id=job.user_id, amount=job.credit_cost, job_id=job.id)
    assert entry.amount == -3
    assert entry.balance_after == 7
    assert credit_balance(user_id=user.pk) == credit_ledger_total(user_id=user.pk) == 7


def test_charge_refuses_when_balance_is_short_and_changes_nothing(make_user):
    user = make_user(credits=2)
    job = ImageJobFactory.create(user=user, quantity=3, credit_cost=3)
    with pytest.raises(InsufficientCredits):
        credit_charge(user_id=job.user_id, amount=job.credit_cost, job_id=job.id)
    assert credit_balance(user_id=user.pk) == 2
    assert not CreditLedgerEntry.objects.filter(job=job).exists()


def test_a_job_is_refunded_at_most_once(make_user):
    user = make_user(credits=10)
    job = ImageJobFactory.create(user=user, quantity=4, credit_cost=4)
    credit_charge(user_id=job.user_id, amount=job.credit_cost, job_id=job.id)
    assert credit_refund(user_id=job.user_id, job_id=job.id, amount=3) is not None
    assert credit_refund(user_id=job.user_id, job_id=job.id, amount=3) is None
    assert credit_balance(user_id=user.pk) == credit_ledger_total(user_id=user.pk) == 9


def test_database_refuses_a_second_charge_for_the_same_job(make_user):
    user = make_user(credits=10)
    job = ImageJobFactory.create(user=user)
    entry = credit_charge(user_id=job.user_id, amount=job.credit_cost, job_id=job.id)
    with pytest.raises(IntegrityError), transaction.atomic():
        CreditLedgerEntry.objects.create(account=entry.account, kind="charge", amount=-1, balance_after=8, job=job)


def test_database_refuses_a_negative_balance(make_user):
    user = make_user(credits=1)
    with pytest.raises(IntegrityError), transaction.atomic():
        user.credit_account.balance = -1
        user.credit_account.save()


def test_ledger_entries_cannot_be_changed_or_deleted(make_user):
    user = make_user(credits=5)
    entry = CreditLedgerEntry.objects.get(account__user=user)
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        CreditLedgerEntry.objects.filter(pk=entry.pk).update(note="rewritten")
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        CreditLedgerEntry.objects.filter(pk=entry.pk).delete()


def test_grant_credits_command_creates_the_user_when_missing(capsys):
    call_command("grant_credits", "newcomer", "25")
    from django.contrib.auth import get_user_model

    user = get_user_model().objects.get(username="newcomer")
    assert credit_balance(user_id=user.pk) == 25
    assert "balance 25" in capsys.readouterr().out


def test_charge_of_a_user_without_an_account_is_refused_and_opens_one_at_zero(make_user):
    user = make_user()
    job = ImageJobFactory.create(user=user, credit_cost=1)
    with pytest.raises(InsufficientCredits) as refused:
        credit_charge(user_id=user.pk, amount=1, job_id=job.id)
    assert refused.value.extra == {"cost": 1, "balance": 0}
    assert credit_balance(user_id=user.pk) == 0


@pytest.mark.django_db(transaction=True)
def test_charge_outside_a_transaction_is_refused_before_writing(make_user):
    user = make_user(credits=5)
    job = ImageJobFactory.create(user=user, credit_cost=2)
    with pytest.raises(TransactionManagementError):
        credit_charge(user_id=user.pk, amount=2, job_id=job.id)
    assert credit_balance(user_id=user.pk) == credit_ledger_total(user_id=user.pk) == 5
