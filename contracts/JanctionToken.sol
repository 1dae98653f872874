// SPDX-License-Identifier: UNLICENSED
pragma solidity 0.8.37;

import {MintableToken} from "./MintableToken.sol";

/// @notice JCT, the Janction reward and staking token (18 decimals).
/// @dev Rewards are minted by holders of EMITTER_ROLE (the Settlement contract) within a linear emission
/// schedule: at most `emissionPerSecond` base units per second since deployment, in total. A compromised
/// emitter can therefore mint no faster than the schedule Proof of Contribution pays out.
contract JanctionToken is MintableToken {
    bytes32 public constant EMITTER_ROLE = keccak256("EMITTER_ROLE");

    uint256 public immutable emissionPerSecond;
    uint256 public immutable emissionStart;
    uint256 public emitted;

    event RewardsEmitted(address indexed to, uint256 amount);

    error EmissionExceeded(uint256 requested, uint256 available);

    constructor(address admin, uint256 emissionPerSecond_) MintableToken("Janction Token", "JCT", admin) {
        emissionPerSecond = emissionPerSecond_;
        emissionStart = block.timestamp;
    }

    /// @notice Return how many base units the schedule allows to be emitted now.
    function emissionAvailable() public view returns (uint256) {
        return emissionPerSecond * (block.timestamp - emissionStart) - emitted;
    }

    /// @notice Mint `amount` reward base units to `to`, within the emission schedule.
    function emitRewards(address to, uint256 amount) external onlyRole(EMITTER_ROLE) {
        uint256 available = emissionAvailable();
        if (amount > available) revert EmissionExceeded(amount, available);
        emitted += amount;
        emit RewardsEmitted(to, amount);
        _mint(to, amount);
    }
}
