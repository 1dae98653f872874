// The Payouts page's claim button: verify the proof in the browser against the claimable root read on chain
// through the wallet (eth_call), then send Settlement.claim from the wallet (EIP-1193 eth_sendTransaction).
(function () {
  const config = document.getElementById("claim-config");
  const status = document.getElementById("claim-status");
  if (!config || !status || !window.JanctionEth) return;
  const eth = window.JanctionEth;
  const settlement = config.dataset.settlement;
  const chainId = parseInt(config.dataset.chainId, 10) || null;
  const buttons = Array.from(document.querySelectorAll("button.wallet-claim"));

  async function claim(button) {
    const leaf = button.dataset;
    const proof = JSON.parse(leaf.proof);
    status.textContent = "Connecting to your wallet…";
    const from = await eth.connect(chainId);
    status.textContent = "Checking your proof against the claimable root on chain…";
    const words = JSON.parse(leaf.leaf);
    const fields = eth.leafFields(...words);
    if (fields.account !== leaf.account.toLowerCase() || fields.token !== leaf.token.toLowerCase() || fields.cumulative !== leaf.cumulative) {
      throw new Error("the leaf does not pay " + leaf.amount + " to " + leaf.account + ". Reload the page.");
    }
    const computed = eth.processProof(eth.leafHash(...words), proof);
    const onChain = await eth.readWord(settlement, "claimRoot()");
    if (/^0x0+$/.test(onChain)) throw new Error("claims are paused on chain (the claimable root is empty).");
    if (computed !== onChain) {
      throw new Error("your proof gives root " + computed + " but the contract's claimable root is " + onChain + ". Reload the page.");
    }
    status.textContent = "Proof verified against the on-chain root " + onChain + ". Confirm the claim in your wallet…";
    const data = eth.claimCalldata(...words, proof);
    const hash = await eth.sendAndWait(from, settlement, data);
    status.textContent = "Claimed " + leaf.amount + " to " + leaf.account + " in transaction " + hash + " (proof verified against root " + onChain + ").";
    button.textContent = "Claimed";
    button.dataset.claimed = hash;
  }

  for (const button of buttons) {
    button.addEventListener("click", async () => {
      buttons.forEach((each) => (each.disabled = true));
      try {
        await claim(button);
      } catch (error) {
        status.textContent = "Claim not sent: " + (error && error.message ? error.message : String(error));
      } finally {
        buttons.forEach((each) => (each.disabled = Boolean(each.dataset.claimed)));
      }
    });
  }
})();
