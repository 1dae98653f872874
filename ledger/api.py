"""Ledger REST API: balances, entries and the embedded-only demo faucet."""

import django_filters
from django.conf import settings
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import generics, serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from janction.api import IsoDateTimeFilter
from janction.openapi import error_responses
from ledger.currencies import AmountField, Currency, from_base_units, to_base_units
from ledger.errors import FaucetDisabled, StakeOnChain
from ledger.idempotency import IDEMPOTENCY_KEY_PARAMETER, idempotent
from ledger.models import Account, Entry, TransactionKind, Unstake
from ledger.selectors import balances_for_user, entries_for_user
from ledger.services import ledger_deposit
from ledger.staking import stake_add, stake_balances, unstake_request


class BalanceSerializer(serializers.ModelSerializer):
    balance = serializers.SerializerMethodField(help_text="Balance in whole currency units, as a decimal string.")
    balance_base_units = serializers.SerializerMethodField(help_text="Balance in integer base units, as a string.")

    class Meta:
        model = Account
        fields = ["id", "kind", "currency", "balance", "balance_base_units"]

    def get_balance(self, account: Account) -> str:
        return from_base_units(int(account.balance), account.currency)

    def get_balance_base_units(self, account: Account) -> str:
        return str(int(account.balance))


class EntrySerializer(serializers.ModelSerializer):
    amount = serializers.SerializerMethodField()
    amount_base_units = serializers.SerializerMethodField()
    account_kind = serializers.CharField(source="account.kind")
    transaction_kind = serializers.CharField(source="transaction.kind")
    memo = serializers.CharField(source="transaction.memo")

    class Meta:
        model = Entry
        fields = [
            "id",
            "transaction",
            "transaction_kind",
            "memo",
            "account",
            "account_kind",
            "currency",
            "amount",
            "amount_base_units",
            "created_at",
        ]

    def get_amount(self, entry: Entry) -> str:
        return from_base_units(int(entry.amount), entry.currency)

    def get_amount_base_units(self, entry: Entry) -> str:
        return str(int(entry.amount))


def _own_accounts(request):
    if request is None or not request.user.is_authenticated:
        return Account.objects.none()
    return Account.objects.filter(owner=request.user)


class EntryFilter(django_filters.FilterSet):
    currency = django_filters.ChoiceFilter(choices=Currency.choices)
    account = django_filters.ModelChoiceFilter(queryset=_own_accounts, help_text="One of your account ids.")
    since = IsoDateTimeFilter(field_name="created_at", lookup_expr="gte")
    until = IsoDateTimeFilter(field_name="created_at", lookup_expr="lt")

    class Meta:
        model = Entry
        fields = ["currency", "account", "since", "until"]


class BalanceList(APIView):
    @extend_schema(responses=BalanceSerializer(many=True), summary="Your balances in every currency")
    def get(self, request):
        return Response(BalanceSerializer(balances_for_user(user_id=request.user.pk), many=True).data)


class EntryList(generics.ListAPIView):
    serializer_class = EntrySerializer
    filterset_class = EntryFilter

    def get_queryset(self):
        return entries_for_user(user_id=self.request.user.pk)


class FaucetSerializer(serializers.Serializer):
    currency = serializers.ChoiceField(choices=Currency.choices)
    amount = AmountField(help_text='Whole currency units as a decimal string, e.g. "100" or "2.5".')

    def validate(self, attrs):
        limit = settings.JANCTION_FAUCET_MAX_UNITS
        if attrs["amount"] > to_base_units(limit, attrs["currency"]):
            raise serializers.ValidationError({"amount": f"The demo faucet gives at most {limit} per request."})
        attrs["amount_base_units"] = attrs["amount"]
        return attrs


class Faucet(APIView):
    @extend_schema(
        request=FaucetSerializer,
        responses={
            201: inline_serializer(
                "FaucetDeposit",
                {
                    "demo": serializers.BooleanField(),
                    "notice": serializers.CharField(),
                    "transaction": serializers.IntegerField(),
                    "currency": serializers.ChoiceField(choices=Currency.choices),
                    "amount": serializers.CharField(help_text="Whole currency units, a decimal string."),
                    "amount_base_units": serializers.CharField(help_text="Integer base units, as a string."),
                },
            ),
            **error_responses(404),
        },
        summary="Demo faucet (embedded default only)",
        description="Credits demo funds. Exists only in the embedded default; real mode answers 404.",
        parameters=[IDEMPOTENCY_KEY_PARAMETER],
    )
    @idempotent
    def post(self, request):
        if not settings.JANCTION_EMBEDDED:
            raise FaucetDisabled("The demo faucet exists only in the embedded default; deposit on-chain instead.")
        serializer = FaucetSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        currency = serializer.validated_data["currency"]
        amount = serializer.validated_data["amount_base_units"]
        result = ledger_deposit(
            user_id=request.user.pk,
            currency=currency,
            amount=amount,
            idempotency_key=f"api:{request.user.pk}:{request.idempotency_key}",
            kind=TransactionKind.FAUCET,
            memo="Demo faucet (not real money)",
        )
        return Response(
            {
                "demo": True,
                "notice": "Demo faucet: these funds exist only in this embedded demo and are not real money.",
                "transaction": result.transaction.pk,
                "currency": currency,
                "amount": from_base_units(amount, currency),
                "amount_base_units": str(amount),
            },
            status=status.HTTP_201_CREATED,
        )


class StakeAmountSerializer(serializers.Serializer):
    amount = AmountField(currency="JCT", help_text='Whole JCT as a decimal string, e.g. "100" or "2.5".')


class UnstakeSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    amount = serializers.SerializerMethodField()
    slashed = serializers.SerializerMethodField()
    requested_at = serializers.DateTimeField()
    release_at = serializers.DateTimeField(help_text="When the rest goes back to the available balance.")
    released_at = serializers.DateTimeField(allow_null=True)

    def get_amount(self, unstake) -> str:
        return from_base_units(int(unstake.amount), "JCT")

    def get_slashed(self, unstake) -> str:
        return from_base_units(int(unstake.slashed), "JCT")


class StakeSerializer(serializers.Serializer):
    mode = serializers.CharField(help_text="ledger (the embedded default) or chain (real mode: stake on chain).")
    staked = serializers.CharField(help_text="JCT counted by the staking gate.")
    unstaking = serializers.CharField(help_text="JCT waiting out the cool-down (still slashable).")
    cooldown_seconds = serializers.IntegerField()
    unstakes = UnstakeSerializer(many=True)


def _stake_view(user) -> dict:
    balance = stake_balances(user_ids=[user.pk])[user.pk]
    return {
        "mode": "chain" if settings.CHAIN_RPC_URL else "ledger",
        "staked": from_base_units(balance.staked, "JCT"),
        "unstaking": from_base_units(balance.unstaking, "JCT"),
        "cooldown_seconds": settings.LEDGER_UNSTAKE_COOLDOWN_SECONDS,
        "unstakes": list(Unstake.objects.filter(user=user)[:50]),
    }


def _ledger_stake_only() -> None:
    if settings.CHAIN_RPC_URL:
        raise StakeOnChain("This platform runs on a chain: stake and unstake JCT on chain (Settlement.stake).")


def _ledger_stake_move(request, service) -> Response:
    """Stake or unstake (``service``) the request's amount at ledger level; answer with the stake as it is now."""
    _ledger_stake_only()
    serializer = StakeAmountSerializer(data=request.data)
    serializer.is_valid(raise_exception=True)
    service(
        user_id=request.user.pk,
        amount=serializer.validated_data["amount"],
        idempotency_key=f"api:{request.idempotency_key}",
    )
    return Response(StakeSerializer(_stake_view(request.user)).data, status=status.HTTP_201_CREATED)


class StakeView(APIView):
    @extend_schema(responses=StakeSerializer, summary="Your JCT stake (ledger-level in the embedded default)")
    def get(self, request):
        return Response(StakeSerializer(_stake_view(request.user)).data)

    @extend_schema(
        request=StakeAmountSerializer,
        responses={201: StakeSerializer, **error_responses(402, 409)},
        summary="Stake JCT from your available balance (embedded default)",
        parameters=[IDEMPOTENCY_KEY_PARAMETER],
    )
    @idempotent
    def post(self, request):
        return _ledger_stake_move(request, stake_add)


class UnstakeView(APIView):
    @extend_schema(
        request=StakeAmountSerializer,
        responses={201: StakeSerializer, **error_responses(402, 409)},
        summary="Ask to unstake JCT: it comes back to your available balance after the cool-down",
        parameters=[IDEMPOTENCY_KEY_PARAMETER],
    )
    @idempotent
    def post(self, request):
        return _ledger_stake_move(request, unstake_request)
