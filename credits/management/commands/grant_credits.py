from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from credits.services import credit_grant


class Command(BaseCommand):
    help = "Grant credits to a user, creating the user when missing."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")
        parser.add_argument("amount", type=int)
        parser.add_argument("--note", default="granted from the command line")

    def handle(self, *args: Any, username: str, amount: int, note: str, **options: Any) -> None:
        if amount <= 0:
            raise CommandError("AMOUNT must be a positive number of credits.")
        user, created = get_user_model().objects.get_or_create(username=username)
        if created:
            self.stdout.write(f"Created user {username} (no password; set one with changepassword).")
        entry = credit_grant(user_id=user.pk, amount=amount, note=note)
        self.stdout.write(self.style.SUCCESS(f"Granted {amount} credits to {username}; balance {entry.balance_after}."))
