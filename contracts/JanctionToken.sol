// SPDX-License-Identifier: UNLICENSED
pragma solidity 0.8.37;

import {MintableToken} from "./MintableToken.sol";

/// @notice JCT, the Janction reward and staking token (18 decimals).
contract JanctionToken is MintableToken {
    constructor(address admin) MintableToken("Janction Token", "JCT", admin) {}
}
