// Link the browser wallet (EIP-1193 provider) with a server-issued SIWE message.
(function () {
  const button = document.getElementById("link-wallet");
  const status = document.getElementById("wallet-status");
  if (!button) return;
  const csrf = document.querySelector("input[name=csrfmiddlewaretoken]").value;
  const post = (url, body) =>
    fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRFToken": csrf },
      body: JSON.stringify(body),
    }).then(async (response) => ({ ok: response.ok, body: await response.json() }));

  button.addEventListener("click", async () => {
    if (!window.ethereum) {
      status.textContent = "No browser wallet found. Install one, or link through the API (POST /api/v1/wallets/).";
      return;
    }
    try {
      const [address] = await window.ethereum.request({ method: "eth_requestAccounts" });
      const challenge = await post(button.dataset.challengeUrl, { address });
      if (!challenge.ok) throw new Error(challenge.body.message);
      const signature = await window.ethereum.request({
        method: "personal_sign",
        params: [challenge.body.message, address],
      });
      const linked = await post(button.dataset.linkUrl, { message: challenge.body.message, signature });
      if (!linked.ok) throw new Error(linked.body.message);
      window.location.reload();
    } catch (error) {
      status.textContent = "Could not link the wallet: " + error.message;
    }
  });
})();
