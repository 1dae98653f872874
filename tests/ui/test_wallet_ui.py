"""Wallet journeys in headless Chromium against Hardhat: claim a payout and stake JCT from the page.

The wallet is a small EIP-1193 provider injected with `add_init_script`: `request()` forwards every call to the
Hardhat node, where the provider's address is impersonated (unlocked), so `eth_sendTransaction` is signed by the
node. The transport is a Playwright binding rather than a `fetch` from the page: a real wallet is an extension that
the page's Content-Security-Policy (connect-src 'self') does not bind, and neither is this one.
"""

import json
import re

import pytest
from playwright.sync_api import expect

import tests.contracts.conftest as contract_fixtures
import tests.settlement.conftest as settlement_fixtures
from ledger.currencies import Currency
from ledger.models import AccountKind
from ledger.services import ledger_account_get
from ledger.settlement.batches import settlement_batch_run
from ledger.settlement.leaves import unpack
from ledger.watcher import chain_watch_scan
from tests.factories import PASSWORD, UserFactory, online_node
from tests.settlement.helpers import CONFIRMATIONS, Market, link_wallet, mine
from tests.ui.test_make_run import AXE, _axe_findings

pytestmark = pytest.mark.django_db(transaction=True)

hardhat_w3 = contract_fixtures.hardhat_w3
deployed_chain = contract_fixtures.deployed_chain
chain = contract_fixtures.chain
live = settlement_fixtures.live
JCT = 10**18
USDC = 10**6

WALLET_JS = """
(() => {
  const listeners = {};
  window.ethereum = {
    isJanctionTestWallet: true,
    async request({ method, params }) {
      const response = JSON.parse(await window.__janctionTestWallet(method, JSON.stringify(params || [])));
      if (response.error) {
        const error = new Error(response.error.message);
        error.code = response.error.code;
        error.data = response.error.data;
        throw error;
      }
      return response.result;
    },
    on(event, handler) { (listeners[event] = listeners[event] || []).push(handler); },
    removeListener(event, handler) { listeners[event] = (listeners[event] || []).filter((h) => h !== handler); },
  };
})();
"""


def inject_wallet(page, w3, address: str) -> list[str]:
    """Give ``page`` an EIP-1193 wallet whose account is ``address`` on the Hardhat node; return its call log."""
    w3.provider.make_request("hardhat_impersonateAccount", [address])
    calls: list[str] = []

    def forward(method: str, params_json: str) -> str:
        calls.append(method)
        if method in ("eth_requestAccounts", "eth_accounts"):
            return json.dumps({"result": [address]})
        return json.dumps(dict(w3.provider.make_request(method, json.loads(params_json))))

    page.expose_function("__janctionTestWallet", forward)
    page.add_init_script(WALLET_JS)
    return calls


def sign_in(page, user):
    page.goto("/accounts/login/")
    page.fill("input[name=login]", user.email)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url("**/dashboard/")


def test_a_provider_claims_from_the_page_through_an_injected_wallet(page, live):
    provider = UserFactory()
    link_wallet(provider, live.alice.address)
    market = Market(buyer=UserFactory(), provider=provider)
    earned = market.charge(40_000_000)
    live.mint(live.usdc, live.settlement.address, 10**12)
    batch = settlement_batch_run()
    assert batch is not None and batch.status == "posted"
    leaf = next(
        [int(word) for word in leaf]
        for leaf in json.loads(batch.data.content)["leaves"]
        if unpack(leaf).account == live.alice.address.lower()
    )
    before = live.usdc.functions.balanceOf(live.alice.address).call()
    calls = inject_wallet(page, live.w3, live.alice.address)
    sign_in(page, provider)

    page.goto("/payouts/")
    assert "Claimable now" in page.inner_text("main")
    page.click("button.wallet-claim")
    expect(page.locator("#claim-status")).to_have_text(re.compile(r"^Claimed "), timeout=60_000)

    status = page.inner_text("#claim-status")
    assert f"proof verified against root {batch.root}" in status
    assert live.settlement.functions.paidOf(*leaf).call() == earned == unpack(leaf).cumulative
    assert live.usdc.functions.balanceOf(live.alice.address).call() == before + earned
    # The page read the root on chain through the wallet before sending, then sent the claim from it.
    assert calls.index("eth_call") < calls.index("eth_sendTransaction")
    tx_hash = status.split("in transaction ")[1].split(" ")[0]
    assert live.w3.eth.get_transaction(tx_hash)["from"] == live.alice.address

    page.reload()
    assert "Claimed" in page.inner_text("#claimable")
    assert page.locator("button.wallet-claim").count() == 0


def test_a_proof_that_does_not_match_the_on_chain_root_is_not_sent(page, live):
    provider = UserFactory()
    link_wallet(provider, live.alice.address)
    Market(buyer=UserFactory(), provider=provider).charge(5_000_000)
    live.mint(live.usdc, live.settlement.address, 10**12)
    settlement_batch_run()
    calls = inject_wallet(page, live.w3, live.alice.address)
    sign_in(page, provider)
    page.goto("/payouts/")
    # Tamper with the amount in the page: the browser's own check refuses it before the wallet sees a transaction.
    # (The amount in the packed leaf word too, or the page's field check would refuse it before the root check.)
    page.eval_on_selector(
        "button.wallet-claim",
        "b => { const w = JSON.parse(b.dataset.leaf); const c = BigInt(b.dataset.cumulative);"
        " w[1] = (BigInt(w[1]) + (c << 160n)).toString(); b.dataset.leaf = JSON.stringify(w);"
        " b.dataset.cumulative = String(c * 2n); }",
    )

    page.click("button.wallet-claim")
    expect(page.locator("#claim-status")).to_have_text(re.compile(r"^Claim not sent"), timeout=60_000)

    assert "contract's claimable root is" in page.inner_text("#claim-status")
    assert "eth_sendTransaction" not in calls


def test_a_provider_stakes_requests_an_unstake_and_withdraws_from_the_page(page, live, settings):
    settings.REPUTATION_POOL_MIN_STAKE_JCT = "8"
    online_node(UserFactory(), name="pool maker", vgpus=1, price=100_000)  # a pool for the minimum-stake table
    provider = UserFactory()
    bob = live.bob.address
    link_wallet(provider, bob)
    live.mint(live.jct, bob, 20 * JCT)
    inject_wallet(page, live.w3, bob)
    sign_in(page, provider)
    status = page.locator("#wallet-status")

    page.goto("/stake/")
    assert "below it" in page.inner_text("#pool-minimums") and "8" in page.inner_text("#pool-minimums")
    page.fill("#stake-amount", "10")
    page.get_by_role("button", name="Approve and stake").click()
    expect(status).to_have_text(re.compile(r"^Staked 10 JCT in transaction 0x"), timeout=60_000)
    assert live.settlement.functions.stakeOf(bob).call() == 10 * JCT
    mine(live, CONFIRMATIONS)
    chain_watch_scan()
    page.reload()
    assert "10" in page.inner_text("#stake-positions") and "meets it" in page.inner_text("#pool-minimums")

    page.fill("#unstake-amount", "11")
    page.get_by_role("button", name="Request unstake").click()
    expect(status).to_have_text(re.compile(r"only 10000000000000000000 JCT base units staked"), timeout=60_000)
    page.fill("#unstake-amount", "4")
    page.get_by_role("button", name="Request unstake").click()
    expect(status).to_have_text(re.compile(r"^Requested an unstake of 4 JCT"), timeout=60_000)
    assert live.settlement.functions.pendingUnstakeOf(bob).call()[0] == 4 * JCT
    mine(live, CONFIRMATIONS)
    chain_watch_scan()
    page.reload()
    row = page.inner_text("#stake-positions")
    assert "6" in row and "4" in row and "UTC" in row  # staked, pending and when it is withdrawable
    assert "below it" in page.inner_text("#pool-minimums")  # 6 JCT staked is below the minimum of 8

    page.get_by_role("button", name="Withdraw pending unstake").click()
    expect(status).to_have_text(re.compile(r"CooldownNotElapsed|reverted|Nothing sent"), timeout=60_000)
    live.advance_time(live.settlement.functions.unstakeCooldown().call())
    page.get_by_role("button", name="Withdraw pending unstake").click()
    expect(status).to_have_text(re.compile(r"^Withdrew your pending unstake"), timeout=60_000)
    assert live.jct.functions.balanceOf(bob).call() == 14 * JCT


def test_a_user_deposits_usdc_from_the_page_and_the_watcher_credits_it(page, live):
    user = UserFactory()
    bob = live.bob.address
    link_wallet(user, bob)
    live.mint(live.usdc, bob, 30 * USDC)
    inject_wallet(page, live.w3, bob)
    sign_in(page, user)

    page.goto("/deposit/")
    page.fill("#deposit-amount", "25.5")
    page.get_by_role("button", name="Approve and deposit").click()
    expect(page.locator("#wallet-status")).to_have_text(re.compile(r"^Deposited 25.5 USDC"), timeout=60_000)
    mine(live, CONFIRMATIONS)
    chain_watch_scan()

    balance = ledger_account_get(user_id=user.pk, kind=AccountKind.AVAILABLE, currency=Currency.USDC).balance
    assert int(balance) == 25_500_000
    page.reload()
    assert "25.5" in page.inner_text("#deposits")

    page.fill("#deposit-amount", "1.0000001")
    page.get_by_role("button", name="Approve and deposit").click()
    expect(page.locator("#wallet-status")).to_have_text(re.compile(r"at most 6 decimals"))


def test_the_wallet_pages_pass_axe_and_fit_360_px(browser, live_server, live):
    provider = UserFactory()
    link_wallet(provider, live.alice.address)
    Market(buyer=UserFactory(), provider=provider).charge(5_000_000)
    settlement_batch_run()
    axe_source = AXE.read_text()
    findings, too_wide = [], []
    for width in (1440, 360):
        context = browser.new_context(base_url=live_server.url, viewport={"width": width, "height": 900})
        page = context.new_page()
        sign_in(page, provider)
        for path in ("/payouts/", "/stake/", "/deposit/"):
            page.goto(path)
            if page.evaluate("document.documentElement.scrollWidth") > width:
                too_wide.append(f"{path} at {width} px")
            if width == 1440:  # as test_make_run: axe at the desktop width (tables scroll by design at 360 px)
                findings.extend(f"{path}: {line}" for line in _axe_findings(page, axe_source))
        context.close()
    assert not findings, "\n".join(findings)
    assert not too_wide, too_wide
