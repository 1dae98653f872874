"""Deploy the test tokens and Settlement to a fresh chain and print the settings that point Janction at them."""

import os

from django.core.management.base import BaseCommand, CommandError
from web3 import Web3

from ledger.chain.client import DEFAULT_UNSTAKE_COOLDOWN_SECONDS, DEVELOPMENT_JCT_EMISSION_PER_SECOND, deploy_all
from ledger.chain.node import ChainConfigError, operator_account, provider_for
from ledger.settlement.connection import CHAIN_DOWN_ERRORS


class Command(BaseCommand):
    help = (
        "Deploy TestUSDC, JCT and Settlement to a fresh chain with the operator key read from an environment "
        "variable, then print the CHAIN_* lines to set. The key itself is never printed."
    )

    def add_arguments(self, parser):
        parser.add_argument("--rpc-url", required=True, help="JSON-RPC URL of the node, http:// or https://.")
        parser.add_argument(
            "--operator-key-env",
            required=True,
            metavar="NAME",
            help="Name of the environment variable holding the deployer/operator's hex private key.",
        )
        parser.add_argument(
            "--unstake-cooldown",
            type=int,
            default=DEFAULT_UNSTAKE_COOLDOWN_SECONDS,
            help="Seconds between an unstake request and its withdrawal (default: 7 days).",
        )
        parser.add_argument(
            "--claim-delay",
            type=int,
            default=0,
            help="Seconds a posted root waits before it is claimable, while the guardian may reject it (default: 0).",
        )
        parser.add_argument(
            "--guardian",
            default=None,
            help="Address holding GUARDIAN_ROLE (pause, reject a pending root); default: the deployer.",
        )
        parser.add_argument(
            "--slasher",
            default=None,
            help="Address holding SLASHER_ROLE (slashes stake to the treasury, the deployer); default: nobody.",
        )
        parser.add_argument(
            "--jct-emission-per-second",
            type=int,
            default=DEVELOPMENT_JCT_EMISSION_PER_SECOND,
            help="Most JCT base units Settlement may mint per second since deployment (default: unbounded for dev).",
        )

    def handle(
        self,
        *args,
        rpc_url: str,
        operator_key_env: str,
        unstake_cooldown: int,
        claim_delay: int,
        guardian: str | None,
        slasher: str | None,
        jct_emission_per_second: int,
        **options,
    ):
        if not operator_key_env.isidentifier():
            raise CommandError(f"--operator-key-env {operator_key_env!r} is not an environment variable name.")
        key = os.environ.get(operator_key_env, "").strip()
        if not key:
            raise CommandError(f"The environment variable {operator_key_env} is not set; export the operator key.")
        if unstake_cooldown < 0:
            raise CommandError("--unstake-cooldown must be zero or more seconds.")
        if claim_delay < 0 or jct_emission_per_second < 0:
            raise CommandError("--claim-delay and --jct-emission-per-second must be zero or more.")
        if guardian is not None and not Web3.is_address(guardian):
            raise CommandError(f"--guardian {guardian!r} is not an EVM address.")
        if slasher is not None and not Web3.is_address(slasher):
            raise CommandError(f"--slasher {slasher!r} is not an EVM address.")
        try:
            operator = operator_account(key)
            w3 = Web3(provider_for(rpc_url))
        except ChainConfigError as error:
            raise CommandError(f"{error}.") from None
        try:
            chain_id = w3.eth.chain_id
            balance = w3.eth.get_balance(operator.address)
            start_block = w3.eth.block_number
            if balance == 0:
                raise CommandError(f"The operator {operator.address} has no ether on chain {chain_id} to pay for gas.")
            addresses = deploy_all(
                w3,
                operator,
                guardian=Web3.to_checksum_address(guardian) if guardian else None,
                slasher=Web3.to_checksum_address(slasher) if slasher else None,
                unstake_cooldown=unstake_cooldown,
                claim_delay=claim_delay,
                jct_emission_per_second=jct_emission_per_second,
            )
        except CHAIN_DOWN_ERRORS as error:
            raise CommandError(f"Cannot reach a JSON-RPC node at {rpc_url}: {error}") from None
        self.stdout.write(f"# Deployed on chain {chain_id} by {operator.address}; set these in the environment:")
        for line in (
            f"CHAIN_RPC_URL={rpc_url}",
            f"CHAIN_SETTLEMENT_ADDRESS={addresses.settlement}",
            f"CHAIN_USDC_ADDRESS={addresses.usdc}",
            f"CHAIN_JCT_ADDRESS={addresses.jct}",
            f"CHAIN_START_BLOCK={start_block + 1}",
        ):
            self.stdout.write(line)
        self.stdout.write(f"# and CHAIN_OPERATOR_KEY to the key in ${operator_key_env} (not printed).")
