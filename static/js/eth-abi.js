// Ethereum helpers for the wallet pages (payouts, stake, deposit): ABI words and calldata, the settlement
// leaf hash and Merkle proof exactly as ledger/merkle.py and Settlement.sol compute them, and EIP-1193 calls.
// Keccak-256 is js-sha3's (static/vendor/sha3.min.js, copied from npm by scripts/vendor-js.js); in Node the
// same file is loaded with require() by tests/settlement/test_browser_leaf_hash.py.
(function (root, factory) {
  if (typeof module === "object" && module.exports) {
    module.exports = factory(require("js-sha3").keccak256);
  } else {
    root.JanctionEth = factory(root.keccak256);
  }
})(typeof self !== "undefined" ? self : this, function (keccak256) {
  "use strict";
  const UINT256_LIMIT = 1n << 256n;

  function strip(hex) {
    return String(hex).replace(/^0x/i, "").toLowerCase();
  }

  function hexToBytes(hex) {
    const digits = strip(hex);
    if (digits.length % 2 || /[^0-9a-f]/.test(digits)) throw new Error("not a hex string: " + hex);
    const bytes = new Uint8Array(digits.length / 2);
    for (let i = 0; i < bytes.length; i++) bytes[i] = parseInt(digits.substr(i * 2, 2), 16);
    return bytes;
  }

  // One 32-byte ABI word (64 hex digits, no 0x) of an unsigned integer (decimal or 0x-hex) or an address.
  function word(value) {
    const text = String(value);
    if (!/^(0x[0-9a-fA-F]+|[0-9]+)$/.test(text)) throw new Error("not an unsigned integer or address: " + text);
    const number = BigInt(text);
    if (number >= UINT256_LIMIT) throw new Error("does not fit 256 bits: " + text);
    return number.toString(16).padStart(64, "0");
  }

  function address(value) {
    if (!/^0x[0-9a-fA-F]{40}$/.test(String(value))) throw new Error("not an address: " + value);
    return word(value);
  }

  // The 4-byte selector of a function signature such as "claimRoot()" (8 hex digits, no 0x).
  function selector(signature) {
    return keccak256(signature).slice(0, 8);
  }

  const ADDRESS_MASK = (1n << 160n) - 1n;

  // keccak256(keccak256(abi.encode(uint256 key, uint256 tokenAmount, uint256 accountPrevious))): OpenZeppelin's
  // StandardMerkleTree leaf of Settlement's packed words (ledger/settlement/leaves.py), as ledger/merkle.py
  // builds it and Settlement._claim checks it.
  function leafHash(key, tokenAmount, accountPrevious) {
    const inner = keccak256(hexToBytes(word(key) + word(tokenAmount) + word(accountPrevious)));
    return "0x" + keccak256(hexToBytes(inner));
  }

  // The fields a leaf's packed words carry: index, token, account (lowercase 0x-hex) and amounts (decimal).
  function leafFields(key, tokenAmount, accountPrevious) {
    const [k, t, a] = [key, tokenAmount, accountPrevious].map((value) => BigInt("0x" + word(value)));
    const hex = (value) => "0x" + (value & ADDRESS_MASK).toString(16).padStart(40, "0");
    return {
      index: (k & ((1n << 64n) - 1n)).toString(),
      token: hex(t),
      account: hex(a),
      cumulative: (t >> 160n).toString(),
      previous: (a >> 160n).toString(),
      paidBefore: (k >> 160n).toString(),
    };
  }

  // Hash the leaf up the proof with sorted pairs (MerkleProof.processProof); return the root as 0x-hex.
  function processProof(leaf, proof) {
    let node = strip(leaf);
    for (const sibling of proof) {
      const other = strip(sibling);
      if (!/^[0-9a-f]{64}$/.test(other)) throw new Error("a proof element is not 32 bytes: " + sibling);
      node = keccak256(hexToBytes(node < other ? node + other : other + node));
    }
    return "0x" + node;
  }

  // Calldata of a function whose arguments are static words (uint, address), optionally followed by one
  // dynamic bytes32[] as the last argument.
  function calldata(signature, words, array) {
    let head = selector(signature) + words.join("");
    if (array === undefined) return "0x" + head;
    const offset = word(32 * (words.length + 1));
    return "0x" + head + offset + word(array.length) + array.map((item) => strip(item).padStart(64, "0")).join("");
  }

  function claimCalldata(key, tokenAmount, accountPrevious, proof) {
    return calldata("claim(uint256,uint256,uint256,bytes32[])", [word(key), word(tokenAmount), word(accountPrevious)], proof);
  }

  // --- EIP-1193 -------------------------------------------------------------------------------------------

  function wallet() {
    if (typeof window === "undefined" || !window.ethereum) {
      throw new Error("No browser wallet found: install an EIP-1193 wallet (such as MetaMask) and reload.");
    }
    return window.ethereum;
  }

  function rpc(method, params) {
    return wallet().request({ method, params: params || [] });
  }

  // Ask for the wallet's account and check that it is on the chain the page expects; return the account.
  async function connect(expectedChainId) {
    const accounts = await rpc("eth_requestAccounts");
    if (!accounts || !accounts.length) throw new Error("The wallet gave no account.");
    const chainId = parseInt(await rpc("eth_chainId"), 16);
    if (expectedChainId && chainId !== expectedChainId) {
      throw new Error("Your wallet is on chain " + chainId + "; switch it to chain " + expectedChainId + ".");
    }
    return accounts[0];
  }

  function ethCall(to, data) {
    return rpc("eth_call", [{ to, data }, "latest"]);
  }

  // Read a uint256 (as a BigInt) or bytes32 (as 0x-hex) view function without arguments, or with static ones.
  async function readWord(to, signature, words) {
    const result = await ethCall(to, calldata(signature, words || []));
    return "0x" + strip(result).slice(0, 64).padStart(64, "0");
  }

  function sleep(ms) {
    return new Promise((resolve) => setTimeout(resolve, ms));
  }

  // Send a transaction from the wallet and wait until it is mined; return its hash, or throw if it reverted.
  async function sendAndWait(from, to, data, timeoutMs) {
    const hash = await rpc("eth_sendTransaction", [{ from, to, data }]);
    const deadline = Date.now() + (timeoutMs || 180000);
    for (;;) {
      const receipt = await rpc("eth_getTransactionReceipt", [hash]);
      if (receipt) {
        if (parseInt(receipt.status, 16) !== 1) throw new Error("transaction " + hash + " reverted");
        return hash;
      }
      if (Date.now() > deadline) throw new Error("transaction " + hash + " is not mined yet; check your wallet");
      await sleep(1000);
    }
  }

  // Decimal text of base units ("12.5") → base units as a decimal string, or throw with what to change.
  function toBaseUnits(text, decimals) {
    const match = /^\s*([0-9]+)(?:\.([0-9]*))?\s*$/.exec(String(text));
    if (!match) throw new Error("Give an amount such as 10 or 2.5.");
    const fraction = match[2] || "";
    if (fraction.length > decimals) throw new Error("Give at most " + decimals + " decimals.");
    const units = BigInt(match[1]) * 10n ** BigInt(decimals) + BigInt((fraction + "0".repeat(decimals)).slice(0, decimals) || "0");
    if (units <= 0n) throw new Error("Give an amount above zero.");
    if (units >= UINT256_LIMIT) throw new Error("That amount is too large.");
    return units.toString();
  }

  return {
    word,
    address,
    selector,
    leafHash,
    leafFields,
    processProof,
    calldata,
    claimCalldata,
    connect,
    ethCall,
    readWord,
    sendAndWait,
    toBaseUnits,
  };
});
