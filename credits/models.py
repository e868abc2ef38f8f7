"""Credit accounts and their append-only ledger: the sum of an account's entries is always its balance."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils.translation import gettext_lazy as _


class CreditAccount(models.Model):
    """The credits one user can spend; the balance can never go below zero."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="credit_account", verbose_name=_("user")
    )
    balance = models.BigIntegerField(_("balance"), default=0)
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)

    class Meta:
        verbose_name = _("credit account")
        verbose_name_plural = _("credit accounts")
        constraints = [models.CheckConstraint(condition=Q(balance__gte=0), name="credit_balance_not_negative")]

    def __str__(self) -> str:
        return f"{self.user} ({self.balance})"


class CreditLedgerEntry(models.Model):
    """One movement of credits; entries are only ever inserted, never changed or deleted."""

    class Kind(models.TextChoices):
        GRANT = "grant", _("Grant")
        CHARGE = "charge", _("Charge")
        REFUND = "refund", _("Refund")
        ADJUSTMENT = "adjustment", _("Adjustment")

    account = models.ForeignKey(
        CreditAccount, on_delete=models.PROTECT, related_name="entries", verbose_name=_("account")
    )
    kind = models.CharField(_("kind"), max_length=16, choices=Kind.choices)
    amount = models.BigIntegerField(_("amount"), help_text=_("Positive adds credits, negative spends them."))
    balance_after = models.BigIntegerField(_("balance after"))
    job = models.ForeignKey(
        "generation.Job",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="ledger_entries",
        verbose_name=_("job"),
    )
    note = models.CharField(_("note"), max_length=200, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        verbose_name=_("created by"),
    )
    created_at = models.DateTimeField(_("created at"), auto_now_add=True, db_index=True)

    class Meta:
        verbose_name = _("ledger entry")
        verbose_name_plural = _("ledger entries")
        ordering = ["-id"]
        constraints = [
            models.CheckConstraint(condition=~Q(amount=0), name="credit_entry_amount_not_zero"),
            models.CheckConstraint(
                condition=Q(kind="grant", amount__gt=0)
                | Q(kind="refund", amount__gt=0, job__isnull=False)
                | Q(kind="charge", amount__lt=0, job__isnull=False)
                | Q(kind="adjustment"),
                name="credit_entry_sign_matches_kind",
            ),
            models.CheckConstraint(condition=Q(balance_after__gte=0), name="credit_entry_balance_not_negative"),
            # A job is charged at most once and refunded at most once, whatever the code above does.
            models.UniqueConstraint(
                fields=["job", "kind"], condition=Q(kind__in=["charge", "refund"]), name="credit_entry_once_per_job"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} {self.amount:+d}"
