"""The embedded in-process chain, `manage.py chain_deploy` and the settlement Celery task."""

import io
import json

import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse

from ledger.chain.artifacts import SETTLEMENT_CONTRACT
from ledger.chain.client import contract_at
from ledger.chain.node import EMBEDDED_LABEL
from ledger.models import SettlementBatch
from ledger.settlement.connection import chain_connection_get
from ledger.tasks import settlement_batch_run_task
from tests.contracts.conftest import funded_account
from tests.factories import UserFactory
from tests.settlement.helpers import Market, link_wallet

KEY_ENV = "JANCTION_TEST_OPERATOR_KEY"


def test_the_embedded_default_deploys_in_process_and_posts_batches(db, settings, anon_client):
    settings.CHAIN_RPC_URL = ""
    conn = chain_connection_get()
    market = Market(buyer=UserFactory(), provider=UserFactory())
    link_wallet(market.provider, "0x" + "ab" * 20)
    market.charge(2_000_000)

    assert settlement_batch_run_task.apply().get() == 1

    assert conn.embedded and conn is chain_connection_get()
    assert conn.settlement.functions.lastSeq().call() == 1
    batch = SettlementBatch.objects.get()
    assert "0x" + conn.settlement.functions.root().call().hex() == batch.root
    content = json.loads(batch.data.content)
    assert content["tokens"] == {"USDC": conn.usdc.address, "JCT": conn.jct.address}
    assert content["previous_data_hash"] is None and content["settlement"] == conn.settlement.address
    info = anon_client.get(reverse("settlement-chain")).json()
    assert (info["mode"], info["label"], info["confirmations"]) == ("embedded", EMBEDDED_LABEL, 0)


def test_chain_deploy_deploys_and_prints_the_settings(hardhat_w3, chain, monkeypatch):
    deployer = funded_account(hardhat_w3, "chain-deploy")
    monkeypatch.setenv(KEY_ENV, deployer.key.to_0x_hex())
    out = io.StringIO()

    slasher = funded_account(hardhat_w3, "chain-deploy-slasher")
    call_command(
        "chain_deploy",
        "--rpc-url",
        hardhat_w3.provider.endpoint_uri,
        "--operator-key-env",
        KEY_ENV,
        "--slasher",
        slasher.address.lower(),
        stdout=out,
    )

    lines = dict(line.split("=", 1) for line in out.getvalue().splitlines() if not line.startswith("#"))
    assert set(lines) == {
        "CHAIN_RPC_URL",
        "CHAIN_SETTLEMENT_ADDRESS",
        "CHAIN_USDC_ADDRESS",
        "CHAIN_JCT_ADDRESS",
        "CHAIN_START_BLOCK",
    }
    settlement = contract_at(hardhat_w3, SETTLEMENT_CONTRACT, lines["CHAIN_SETTLEMENT_ADDRESS"])
    assert settlement.functions.allowedTokens(lines["CHAIN_USDC_ADDRESS"]).call()
    assert settlement.functions.stakeToken().call() == lines["CHAIN_JCT_ADDRESS"]
    slasher_role = settlement.functions.SLASHER_ROLE().call()
    assert settlement.functions.hasRole(slasher_role, slasher.address).call()
    assert not settlement.functions.hasRole(slasher_role, deployer.address).call()
    assert deployer.key.to_0x_hex()[2:] not in out.getvalue()


@pytest.mark.parametrize(
    ("url", "env_name", "key", "message"),
    [
        ("http://127.0.0.1:8545", "1BAD NAME", "", "is not an environment variable name"),
        ("http://127.0.0.1:8545", KEY_ENV, "", f"{KEY_ENV} is not set"),
        ("http://127.0.0.1:8545", KEY_ENV, "0x1234", "not a 32-byte hex private key"),
        ("ftp://node", KEY_ENV, "0x" + "11" * 32, "is not an http:// or https:// JSON-RPC URL"),
        ("http://127.0.0.1:9", KEY_ENV, "0x" + "11" * 32, "Cannot reach a JSON-RPC node"),
    ],
)
def test_chain_deploy_rejects_bad_flags_with_clear_errors(monkeypatch, url, env_name, key, message):
    monkeypatch.setenv(KEY_ENV, key)
    with pytest.raises(CommandError, match=message):
        call_command("chain_deploy", "--rpc-url", url, "--operator-key-env", env_name)


def test_chain_deploy_refuses_an_operator_without_gas(hardhat_w3, monkeypatch):
    monkeypatch.setenv(KEY_ENV, "0x" + "42" * 32)
    with pytest.raises(CommandError, match="has no ether"):
        call_command("chain_deploy", "--rpc-url", hardhat_w3.provider.endpoint_uri, "--operator-key-env", KEY_ENV)
