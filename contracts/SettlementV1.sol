// SPDX-License-Identifier: UNLICENSED
pragma solidity 0.8.37;

import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";
import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {MerkleProof} from "@openzeppelin/contracts/utils/cryptography/MerkleProof.sol";
import {Pausable} from "@openzeppelin/contracts/utils/Pausable.sol";
import {ReentrancyGuardTransient} from "@openzeppelin/contracts/utils/ReentrancyGuardTransient.sol";

/// @title Janction settlement, first version (kept compiled as the gas baseline and the source of a migration): batch roots, cumulative claims, deposits and JCT staking.
/// @notice The operator posts one Merkle root per settlement batch, strictly in sequence. Each leaf is
/// `(token, account, cumulativeAmount)`, the total ever owed to `account` in `token`, hashed as
/// OpenZeppelin's StandardMerkleTree does; a claim against the latest root pays what is owed beyond
/// what was already claimed. Deposits are events the off-chain ledger credits. Staked JCT is kept
/// apart from the JCT that claims pay out.
contract SettlementV1 is AccessControl, Pausable, ReentrancyGuardTransient {
    using SafeERC20 for IERC20;

    struct PendingUnstake {
        uint256 amount;
        uint256 unlockAt;
    }

    bytes32 public constant OPERATOR_ROLE = keccak256("OPERATOR_ROLE");

    IERC20 public immutable stakeToken;

    uint256 public lastSeq;
    bytes32 public root;
    uint256 public unstakeCooldown;
    uint256 public totalStaked;

    mapping(address token => bool) public allowedTokens;
    mapping(address token => mapping(address account => uint256)) public claimed;
    mapping(address account => uint256) public stakeOf;
    mapping(address account => PendingUnstake) public pendingUnstakeOf;

    event BatchPosted(uint256 indexed seq, bytes32 root, bytes32 dataHash);
    event Claimed(address indexed token, address indexed account, uint256 amount, uint256 cumulativeAmount);
    event Deposited(address indexed token, address indexed from, uint256 amount);
    event TokenAllowed(address indexed token, bool allowed);
    event Staked(address indexed account, uint256 amount);
    event UnstakeRequested(address indexed account, uint256 amount, uint256 unlockAt);
    event StakeWithdrawn(address indexed account, uint256 amount);
    event UnstakeCooldownSet(uint256 cooldown);

    error InvalidSequence(uint256 expected, uint256 given);
    error TokenNotAllowed(address token);
    error InvalidProof();
    error NothingToClaim(address token, address account);
    error InsufficientLiquidity(address token, uint256 needed, uint256 available);
    error ZeroAmount();
    error InsufficientStake(uint256 staked, uint256 requested);
    error NoPendingUnstake();
    error CooldownNotElapsed(uint256 unlockAt);

    constructor(address admin, address operator, IERC20 stakeToken_, uint256 unstakeCooldown_) {
        _grantRole(DEFAULT_ADMIN_ROLE, admin);
        _grantRole(OPERATOR_ROLE, operator);
        stakeToken = stakeToken_;
        unstakeCooldown = unstakeCooldown_;
        emit UnstakeCooldownSet(unstakeCooldown_);
    }

    /// @notice Publish the root of settlement batch `seq`, which must directly follow the last one.
    function postBatch(uint256 seq, bytes32 root_, bytes32 dataHash) external onlyRole(OPERATOR_ROLE) {
        if (seq != lastSeq + 1) revert InvalidSequence(lastSeq + 1, seq);
        lastSeq = seq;
        root = root_;
        emit BatchPosted(seq, root_, dataHash);
    }

    /// @notice Pay `account` its `cumulativeAmount` of `token` in the latest root, less what it already claimed.
    function claim(address token, address account, uint256 cumulativeAmount, bytes32[] calldata proof)
        external
        whenNotPaused
        nonReentrant
    {
        _requireAllowed(token);
        bytes32 leaf = keccak256(bytes.concat(keccak256(abi.encode(token, account, cumulativeAmount))));
        if (!MerkleProof.verifyCalldata(proof, root, leaf)) revert InvalidProof();
        uint256 alreadyClaimed = claimed[token][account];
        if (cumulativeAmount <= alreadyClaimed) revert NothingToClaim(token, account);
        uint256 amount = cumulativeAmount - alreadyClaimed;
        if (token == address(stakeToken)) {
            // Stakers' JCT is not the payout pool: only what exceeds the total stake can be claimed.
            // (Other tokens need no check: the transfer itself reverts when the contract holds too little.)
            uint256 available = _unstakedBalance();
            if (amount > available) revert InsufficientLiquidity(token, amount, available);
        }
        claimed[token][account] = cumulativeAmount;
        emit Claimed(token, account, amount, cumulativeAmount);
        IERC20(token).safeTransfer(account, amount);
    }

    /// @notice Pull `amount` of `token` from the caller for the off-chain ledger to credit.
    function deposit(address token, uint256 amount) external whenNotPaused nonReentrant {
        _requireAllowed(token);
        if (amount == 0) revert ZeroAmount();
        emit Deposited(token, msg.sender, amount);
        IERC20(token).safeTransferFrom(msg.sender, address(this), amount);
    }

    /// @notice Lock `amount` of JCT from the caller as stake.
    function stake(uint256 amount) external whenNotPaused nonReentrant {
        if (amount == 0) revert ZeroAmount();
        stakeOf[msg.sender] += amount;
        totalStaked += amount;
        emit Staked(msg.sender, amount);
        stakeToken.safeTransferFrom(msg.sender, address(this), amount);
    }

    /// @notice Move `amount` of the caller's stake to its pending unstake, restarting the cool-down.
    function requestUnstake(uint256 amount) external {
        if (amount == 0) revert ZeroAmount();
        uint256 staked = stakeOf[msg.sender];
        if (amount > staked) revert InsufficientStake(staked, amount);
        stakeOf[msg.sender] = staked - amount;
        PendingUnstake storage pending = pendingUnstakeOf[msg.sender];
        pending.amount += amount;
        pending.unlockAt = block.timestamp + unstakeCooldown;
        emit UnstakeRequested(msg.sender, amount, pending.unlockAt);
    }

    /// @notice Send the caller its pending unstake once the cool-down has elapsed.
    function withdrawStake() external nonReentrant {
        PendingUnstake memory pending = pendingUnstakeOf[msg.sender];
        if (pending.amount == 0) revert NoPendingUnstake();
        if (block.timestamp < pending.unlockAt) revert CooldownNotElapsed(pending.unlockAt);
        delete pendingUnstakeOf[msg.sender];
        totalStaked -= pending.amount;
        emit StakeWithdrawn(msg.sender, pending.amount);
        stakeToken.safeTransfer(msg.sender, pending.amount);
    }

    /// @notice Allow or forbid `token` for deposits and claims.
    function setTokenAllowed(address token, bool allowed) external onlyRole(DEFAULT_ADMIN_ROLE) {
        allowedTokens[token] = allowed;
        emit TokenAllowed(token, allowed);
    }

    /// @notice Set the delay between an unstake request and its withdrawal, for requests made from now on.
    function setUnstakeCooldown(uint256 cooldown) external onlyRole(DEFAULT_ADMIN_ROLE) {
        unstakeCooldown = cooldown;
        emit UnstakeCooldownSet(cooldown);
    }

    /// @notice Stop claims, deposits and new stake; unstaking stays open so stakers can always leave.
    function pause() external onlyRole(OPERATOR_ROLE) {
        _pause();
    }

    /// @notice Resume claims, deposits and new stake.
    function unpause() external onlyRole(OPERATOR_ROLE) {
        _unpause();
    }

    function _requireAllowed(address token) private view {
        if (!allowedTokens[token]) revert TokenNotAllowed(token);
    }

    /// @dev Balance of `token` that claims may pay out: everything except staked JCT.
    function _unstakedBalance() private view returns (uint256) {
        uint256 balance = stakeToken.balanceOf(address(this));
        return balance > totalStaked ? balance - totalStaked : 0;
    }
}
