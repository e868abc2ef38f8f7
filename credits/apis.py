"""REST endpoint for the caller's credits."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core.serializers import caller_id
from credits.models import CreditLedgerEntry
from credits.selectors import credit_balance, credit_ledger

RECENT_ENTRIES = 20


class LedgerEntryOutputSerializer(serializers.ModelSerializer):
    class Meta:
        model = CreditLedgerEntry
        fields = ["id", "kind", "amount", "balance_after", "job", "note", "created_at"]
        read_only_fields = fields


class CreditsApi(APIView):
    """The caller's balance and most recent ledger entries."""

    class OutputSerializer(serializers.Serializer):
        balance = serializers.IntegerField()
        entries = LedgerEntryOutputSerializer(many=True)

    @extend_schema(responses={200: OutputSerializer})
    def get(self, request: Request) -> Response:
        user_id = caller_id(request)
        data = {"balance": credit_balance(user_id=user_id), "entries": credit_ledger(user_id=user_id)[:RECENT_ENTRIES]}
        return Response(self.OutputSerializer(data).data)
