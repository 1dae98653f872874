// SPDX-License-Identifier: UNLICENSED
pragma solidity 0.8.37;

import {MintableToken} from "./MintableToken.sol";

/// @notice Stand-in for USDC on development chains: 6 decimals, minted freely by the minter.
contract TestUSDC is MintableToken {
    constructor(address admin) MintableToken("Test USD Coin", "USDC", admin) {}

    function decimals() public pure override returns (uint8) {
        return 6;
    }
}
