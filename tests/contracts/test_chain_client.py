"""ledger.chain.client against a Hardhat node: deploy_all, send and custom error decoding."""

import pytest
from eth_utils import keccak
from web3.exceptions import ContractLogicError

from ledger.chain.client import TransactionReverted, decode_custom_error, send


def test_deploy_all_wires_roles_tokens_and_the_stake_token(chain):
    settlement = chain.settlement
    has_role = settlement.functions.hasRole

    assert has_role(keccak(text="OPERATOR_ROLE"), chain.operator.address).call()
    assert not has_role(keccak(text="OPERATOR_ROLE"), chain.admin.address).call()
    assert has_role(settlement.functions.DEFAULT_ADMIN_ROLE().call(), chain.admin.address).call()
    assert settlement.functions.allowedTokens(chain.usdc.address).call()
    assert settlement.functions.allowedTokens(chain.jct.address).call()
    assert settlement.functions.stakeToken().call() == chain.jct.address
    assert settlement.functions.lastSeq().call() == 0
    assert chain.usdc.functions.hasRole(keccak(text="MINTER_ROLE"), chain.admin.address).call()


def test_send_raises_transaction_reverted_when_a_mined_transaction_reverts(chain):
    call = chain.settlement.functions.postBatch(5, b"\x01" * 32, b"\x02" * 32, 0)
    # With automine on, Hardhat answers a reverting eth_sendRawTransaction with an error; mine on a timer instead.
    chain.w3.provider.make_request("evm_setAutomine", [False])
    chain.w3.provider.make_request("evm_setIntervalMining", [100])
    try:
        with pytest.raises(TransactionReverted) as excinfo:
            send(chain.w3, chain.operator, call, gas=200_000)
    finally:
        chain.w3.provider.make_request("evm_setIntervalMining", [0])
        chain.w3.provider.make_request("evm_setAutomine", [True])

    receipt = chain.w3.eth.get_transaction_receipt(excinfo.value.tx_hash)
    assert receipt["status"] == 0


def test_decode_custom_error_rejects_revert_data_outside_the_abi(chain):
    error = ContractLogicError("execution reverted", data="0xdeadbeef")

    with pytest.raises(ValueError, match="0xdeadbeef"):
        decode_custom_error(chain.settlement.abi, error)
