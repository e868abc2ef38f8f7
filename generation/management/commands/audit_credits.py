"""``python manage.py audit_credits``: check every balance against its ledger and every job's charge and refund."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from credits.selectors import credit_audit
from generation.selectors import job_credit_audit


class Command(BaseCommand):
    help = (
        "Check that every balance equals the sum of its ledger, that each entry's balance-after is the running sum, "
        "and that each job was charged its cost and refunded at most that, once finished. Exits 1 on any difference."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--quiet", action="store_true", help="Print only the problems found.")

    def handle(self, *args: Any, quiet: bool, **options: Any) -> None:
        problems = credit_audit() + job_credit_audit()
        for problem in problems:
            self.stdout.write(problem)
        if problems:
            raise CommandError(f"The credit audit found {len(problems)} problem(s).")
        if not quiet:
            self.stdout.write(
                self.style.SUCCESS("OK: every balance matches its ledger, and every job's charge and refund add up.")
            )
