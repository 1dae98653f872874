"""TestUSDC and JanctionToken on a Hardhat node."""

import pytest


@pytest.mark.parametrize(
    ("token_name", "symbol", "decimals"),
    [("usdc", "USDC", 6), ("jct", "JCT", 18)],
)
def test_tokens_have_their_symbol_and_decimals(chain, token_name, symbol, decimals):
    token = getattr(chain, token_name)

    assert token.functions.symbol().call() == symbol
    assert token.functions.decimals().call() == decimals


@pytest.mark.parametrize("token_name", ["usdc", "jct"])
def test_only_the_minter_mints(chain, token_name):
    token = getattr(chain, token_name)
    minter_role = token.functions.MINTER_ROLE().call()

    chain.send(chain.admin, token.functions.mint(chain.alice.address, 123))
    chain.assert_reverts(
        chain.outsider,
        token.functions.mint(chain.outsider.address, 1),
        "AccessControlUnauthorizedAccount",
        chain.outsider.address,
        minter_role,
    )

    assert token.functions.balanceOf(chain.alice.address).call() == 123
    assert token.functions.totalSupply().call() == 123
