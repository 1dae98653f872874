// Stake and deposit pages: each form.wallet-action sends its transactions from the browser wallet (EIP-1193):
// stake (approve + stake), unstake (requestUnstake), withdraw (withdrawStake), deposit (approve + deposit).
(function () {
  const config = document.getElementById("wallet-config");
  const status = document.getElementById("wallet-status");
  if (!config || !status || !window.JanctionEth) return;
  const eth = window.JanctionEth;
  const settlement = config.dataset.settlement;
  const chainId = parseInt(config.dataset.chainId, 10) || null;
  const DECIMALS = { USDC: 6, JCT: 18 };

  function say(text) {
    status.textContent = text;
  }

  async function approveThen(from, token, units, signature, words, label) {
    say("Confirm the approval in your wallet…");
    await eth.sendAndWait(from, token, eth.calldata("approve(address,uint256)", [eth.address(settlement), eth.word(units)]));
    say("Approved. Confirm the " + label + " in your wallet…");
    return eth.sendAndWait(from, settlement, eth.calldata(signature, words));
  }

  const actions = {
    async stake(form, from) {
      const units = eth.toBaseUnits(form.amount.value, DECIMALS.JCT);
      const hash = await approveThen(from, config.dataset.jct, units, "stake(uint256)", [eth.word(units)], "stake");
      return "Staked " + form.amount.value.trim() + " JCT in transaction " + hash + ".";
    },
    async unstake(form, from) {
      const units = eth.toBaseUnits(form.amount.value, DECIMALS.JCT);
      const staked = BigInt(await eth.readWord(settlement, "stakeOf(address)", [eth.address(from)]));
      if (BigInt(units) > staked) throw new Error("your wallet has only " + staked + " JCT base units staked on chain.");
      say("Confirm the unstake request in your wallet…");
      const hash = await eth.sendAndWait(from, settlement, eth.calldata("requestUnstake(uint256)", [eth.word(units)]));
      return "Requested an unstake of " + form.amount.value.trim() + " JCT in transaction " + hash + ".";
    },
    async withdraw(form, from) {
      say("Confirm the withdrawal in your wallet…");
      const hash = await eth.sendAndWait(from, settlement, eth.calldata("withdrawStake()", []));
      return "Withdrew your pending unstake in transaction " + hash + ".";
    },
    async deposit(form, from) {
      const currency = form.currency.value;
      const token = currency === "USDC" ? config.dataset.usdc : config.dataset.jct;
      const units = eth.toBaseUnits(form.amount.value, DECIMALS[currency]);
      const hash = await approveThen(
        from, token, units, "deposit(address,uint256)", [eth.address(token), eth.word(units)], "deposit",
      );
      return "Deposited " + form.amount.value.trim() + " " + currency + " in transaction " + hash + ". It is credited once the watcher has seen it.";
    },
  };

  for (const form of document.querySelectorAll("form.wallet-action")) {
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const buttons = document.querySelectorAll("form.wallet-action button");
      buttons.forEach((button) => (button.disabled = true));
      try {
        say("Connecting to your wallet…");
        const from = await eth.connect(chainId);
        say(await actions[form.dataset.action](form, from));
      } catch (error) {
        say("Nothing sent or it failed: " + (error && error.message ? error.message : String(error)));
      } finally {
        buttons.forEach((button) => (button.disabled = false));
      }
    });
  }
})();
