// Hardhat 2 serves only the local test chain; contracts are compiled by scripts/compile-contracts.js.
module.exports = {
  networks: {
    hardhat: {
      chainId: 31337,
    },
  },
};
