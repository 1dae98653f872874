// SPDX-License-Identifier: UNLICENSED
pragma solidity 0.8.37;

import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";
import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";

/// @notice The part of JanctionToken that Settlement uses to fund rewards.
interface IRewardEmitter {
    function emitRewards(address to, uint256 amount) external;
}

/// @title Janction settlement, second version (kept compiled as the gas baseline and the source of a migration): delayed batch roots, cumulative claims, deposits, JCT staking and emission.
/// @notice The operator posts one Merkle root per settlement batch, strictly in sequence. Each leaf is
/// `(index, token, account, cumulativeAmount)`: the total ever owed to `account` in `token`, under an
/// allocation `index` that never changes for that (token, account), hashed as OpenZeppelin's
/// StandardMerkleTree does. A claim against the claimable root pays what is owed beyond what was
/// already claimed. A posted root becomes claimable only after `claimDelay`, during which the guardian
/// can reject it; the guardian can also pause, which closes claims by zeroing the claimable root.
/// @dev Claims are the hot path, so they read two storage slots (the claimable root and the
/// claimed word; JCT claims also the stake total) and write `claimed` before transferring (no guard).
/// Claimed amounts are uint128, two to a slot, so a claim into a slot its neighbour already wrote
/// pays a non-zero write. A claim emits no event of its own: it is the token's Transfer out of this
/// contract that no StakeWithdrawn or StakeSlashed precedes. Staked JCT is kept apart from the JCT that claims
/// pay out. The slasher (a role of its own, neither the operator nor the guardian) can take part of a stake,
/// active or pending unstake, to the treasury, once per evidence hash.
contract SettlementV2 is AccessControl {
    using SafeERC20 for IERC20;

    struct PendingUnstake {
        uint256 amount;
        uint256 unlockAt;
    }

    /// @notice One leaf and its proof, for claimMany.
    struct Leaf {
        uint256 index;
        address token;
        address account;
        uint128 cumulativeAmount;
        bytes32[] proof;
    }

    bytes32 public constant OPERATOR_ROLE = keccak256("OPERATOR_ROLE");
    bytes32 public constant GUARDIAN_ROLE = keccak256("GUARDIAN_ROLE");
    bytes32 public constant SLASHER_ROLE = keccak256("SLASHER_ROLE");

    IERC20 public immutable stakeToken;
    /// @notice The seq this deployment continues from (a migration keeps the platform's batch numbering).
    uint256 public immutable startSeq;

    /// @notice The root claims verify against: the active root, or zero while paused or before any activates.
    bytes32 public claimRoot;
    /// @notice The latest activated root (what claimRoot holds when not paused).
    bytes32 public activeRoot;
    /// @notice The latest posted root, active or pending.
    bytes32 public root;
    uint256 public lastSeq;
    uint256 public activeSeq;
    uint256 public pendingSeq;
    uint256 public activatesAt;
    uint256 public claimDelay;
    bool public paused;
    uint256 public unstakeCooldown;
    uint256 public totalStaked;

    mapping(uint256 slot => uint256) private _claimedSlots;
    mapping(address token => bool) public allowedTokens;
    mapping(address account => uint256) public stakeOf;
    mapping(address account => PendingUnstake) public pendingUnstakeOf;
    /// @notice Where slashed JCT goes (set by the admin; the slasher cannot send it anywhere else).
    address public treasury;
    /// @notice Evidence hashes already slashed for: each slashes at most once.
    mapping(bytes32 evidence => bool) public slashedEvidence;

    event BatchPosted(uint256 indexed seq, bytes32 root, bytes32 dataHash);
    event BatchActivated(uint256 indexed seq, bytes32 root);
    event BatchRejected(uint256 indexed seq, bytes32 root);
    event ClaimsSeeded(uint256 count, uint256 total);
    event RewardsFunded(uint256 indexed seq, uint256 amount);
    event Deposited(address indexed token, address indexed from, uint256 amount);
    event TokenAllowed(address indexed token, bool allowed);
    event Staked(address indexed account, uint256 amount);
    event UnstakeRequested(address indexed account, uint256 amount, uint256 unlockAt);
    event StakeWithdrawn(address indexed account, uint256 amount);
    event StakeSlashed(
        address indexed account, bytes32 indexed evidence, uint256 amount, uint256 fromStake, uint256 fromPending
    );
    event TreasurySet(address treasury);
    event UnstakeCooldownSet(uint256 cooldown);
    event ClaimDelaySet(uint256 delay);
    event Paused(address account);
    event Unpaused(address account);

    error InvalidSequence(uint256 expected, uint256 given);
    error BatchPending(uint256 seq, uint256 activatesAt);
    error NoPendingBatch(uint256 seq);
    error DelayNotElapsed(uint256 activatesAt);
    error ClaimsClosed();
    error InvalidProof();
    error NothingToClaim(uint256 index);
    error InsufficientLiquidity(address token, uint256 needed, uint256 available);
    error TokenNotAllowed(address token);
    error EnforcedPause();
    error ExpectedPause();
    error SeedingClosed();
    error AlreadySeeded(uint256 index);
    error LengthMismatch();
    error ZeroAmount();
    error InsufficientStake(uint256 staked, uint256 requested);
    error NoPendingUnstake();
    error CooldownNotElapsed(uint256 unlockAt);
    error EvidenceUsed(bytes32 evidence);
    error ZeroEvidence();
    error ZeroAddress();

    constructor(
        address admin,
        address operator,
        address guardian,
        IERC20 stakeToken_,
        uint256 unstakeCooldown_,
        uint256 claimDelay_,
        uint256 startSeq_
    ) {
        _grantRole(DEFAULT_ADMIN_ROLE, admin);
        _grantRole(OPERATOR_ROLE, operator);
        _grantRole(GUARDIAN_ROLE, guardian);
        stakeToken = stakeToken_;
        unstakeCooldown = unstakeCooldown_;
        claimDelay = claimDelay_;
        startSeq = startSeq_;
        lastSeq = startSeq_;
        treasury = admin;
        emit UnstakeCooldownSet(unstakeCooldown_);
        emit ClaimDelaySet(claimDelay_);
        emit TreasurySet(admin);
    }

    // --- Batches ----------------------------------------------------------------------------------

    /// @notice Publish the root of batch `seq` (the next in sequence) and mint the JCT rewards it newly owes.
    /// @dev A due pending batch is activated first; one still inside its delay makes the post revert.
    function postBatch(uint256 seq, bytes32 root_, bytes32 dataHash, uint256 jctRewards)
        external
        onlyRole(OPERATOR_ROLE)
    {
        if (seq != lastSeq + 1) revert InvalidSequence(lastSeq + 1, seq);
        uint256 pending = pendingSeq;
        if (pending != 0) {
            if (block.timestamp < activatesAt) revert BatchPending(pending, activatesAt);
            _activate(pending, root);
        }
        lastSeq = seq;
        root = root_;
        emit BatchPosted(seq, root_, dataHash);
        if (jctRewards != 0) {
            emit RewardsFunded(seq, jctRewards);
            IRewardEmitter(address(stakeToken)).emitRewards(address(this), jctRewards);
        }
        uint256 delay = claimDelay;
        if (delay == 0) {
            _activate(seq, root_);
        } else {
            pendingSeq = seq;
            activatesAt = block.timestamp + delay;
        }
    }

    /// @notice Make the pending batch claimable once its delay has elapsed (anyone may call).
    function activateBatch() external {
        uint256 pending = pendingSeq;
        if (pending == 0) revert NoPendingBatch(0);
        if (block.timestamp < activatesAt) revert DelayNotElapsed(activatesAt);
        _activate(pending, root);
    }

    /// @notice Reject pending batch `seq` before it becomes claimable; the claimable root stays as it was.
    function rejectBatch(uint256 seq) external onlyRole(GUARDIAN_ROLE) {
        if (seq == 0 || pendingSeq != seq) revert NoPendingBatch(seq);
        emit BatchRejected(seq, root);
        pendingSeq = 0;
        activatesAt = 0;
        root = activeRoot;
    }

    function _activate(uint256 seq, bytes32 root_) private {
        activeSeq = seq;
        activeRoot = root_;
        pendingSeq = 0;
        activatesAt = 0;
        if (!paused) claimRoot = root_;
        emit BatchActivated(seq, root_);
    }

    // --- Claims -----------------------------------------------------------------------------------

    /// @notice Pay `account` its `cumulativeAmount` of `token` in the claimable root, less what it already claimed.
    function claim(
        uint256 index,
        address token,
        address account,
        uint128 cumulativeAmount,
        bytes32[] calldata proof
    ) external {
        bytes32 root_ = claimRoot;
        if (root_ == 0) revert ClaimsClosed();
        _claim(root_, index, token, account, cumulativeAmount, proof);
    }

    /// @notice Claim several leaves (say, an account's USDC and JCT) in one transaction.
    function claimMany(Leaf[] calldata leaves) external {
        bytes32 root_ = claimRoot;
        if (root_ == 0) revert ClaimsClosed();
        for (uint256 i = 0; i < leaves.length; ++i) {
            Leaf calldata leaf = leaves[i];
            _claim(root_, leaf.index, leaf.token, leaf.account, leaf.cumulativeAmount, leaf.proof);
        }
    }

    /// @notice Return what allocation `index` has claimed so far.
    function claimed(uint256 index) external view returns (uint256) {
        return uint128(_claimedSlots[index >> 1] >> ((index & 1) << 7));
    }

    function _claim(
        bytes32 root_,
        uint256 index,
        address token,
        address account,
        uint128 cumulativeAmount,
        bytes32[] calldata proof
    ) private {
        bool valid;
        assembly ("memory-safe") {
            // The leaf, keccak256(bytes.concat(keccak256(abi.encode(index, token, account, cumulativeAmount)))),
            // then MerkleProof.verifyCalldata's sorted-pair hashing up the proof, all in scratch memory.
            let free := mload(0x40)
            mstore(free, index)
            mstore(add(free, 0x20), token)
            mstore(add(free, 0x40), account)
            mstore(add(free, 0x60), cumulativeAmount)
            mstore(0x00, keccak256(free, 0x80))
            let node := keccak256(0x00, 0x20)
            let end := add(proof.offset, shl(5, proof.length))
            for { let p := proof.offset } lt(p, end) { p := add(p, 0x20) } {
                let sibling := calldataload(p)
                switch lt(node, sibling)
                case 1 {
                    mstore(0x00, node)
                    mstore(0x20, sibling)
                }
                default {
                    mstore(0x00, sibling)
                    mstore(0x20, node)
                }
                node := keccak256(0x00, 0x40)
            }
            valid := eq(node, root_)
        }
        if (!valid) revert InvalidProof();
        uint256 slot = index >> 1;
        uint256 shift = (index & 1) << 7;
        uint256 word = _claimedSlots[slot];
        uint256 already = uint128(word >> shift);
        if (cumulativeAmount <= already) revert NothingToClaim(index);
        uint256 amount = cumulativeAmount - already;
        if (token == address(stakeToken)) {
            // Stakers' JCT is not the payout pool: only what exceeds the total stake can be claimed.
            // (Other tokens need no check: the transfer itself reverts when the contract holds too little.)
            uint256 available = _unstakedBalance();
            if (amount > available) revert InsufficientLiquidity(token, amount, available);
        }
        _claimedSlots[slot] = (word & ~(uint256(type(uint128).max) << shift)) | (uint256(cumulativeAmount) << shift);
        // No event of its own: the token's Transfer from this contract records the claim (1,774 gas less).
        IERC20(token).safeTransfer(account, amount);
    }

    /// @notice Carry claimed amounts over from a previous deployment; only before this contract's first batch.
    /// @dev The old contract must be paused first so no claim lands there after its amounts were read.
    function seedClaimed(uint256[] calldata indices, uint128[] calldata amounts) external onlyRole(DEFAULT_ADMIN_ROLE) {
        if (lastSeq != startSeq) revert SeedingClosed();
        if (indices.length != amounts.length) revert LengthMismatch();
        uint256 total;
        for (uint256 i = 0; i < indices.length; ++i) {
            uint256 index = indices[i];
            uint256 slot = index >> 1;
            uint256 shift = (index & 1) << 7;
            uint256 word = _claimedSlots[slot];
            if (uint128(word >> shift) != 0) revert AlreadySeeded(index);
            _claimedSlots[slot] = word | (uint256(amounts[i]) << shift);
            total += amounts[i];
        }
        emit ClaimsSeeded(indices.length, total);
    }

    // --- Deposits and stake -----------------------------------------------------------------------

    /// @notice Pull `amount` of `token` from the caller for the off-chain ledger to credit.
    function deposit(address token, uint256 amount) external {
        _requireNotPaused();
        if (!allowedTokens[token]) revert TokenNotAllowed(token);
        if (amount == 0) revert ZeroAmount();
        emit Deposited(token, msg.sender, amount);
        IERC20(token).safeTransferFrom(msg.sender, address(this), amount);
    }

    /// @notice Lock `amount` of JCT from the caller as stake.
    function stake(uint256 amount) external {
        _requireNotPaused();
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
    function withdrawStake() external {
        PendingUnstake memory pending = pendingUnstakeOf[msg.sender];
        if (pending.amount == 0) revert NoPendingUnstake();
        if (block.timestamp < pending.unlockAt) revert CooldownNotElapsed(pending.unlockAt);
        delete pendingUnstakeOf[msg.sender];
        totalStaked -= pending.amount;
        emit StakeWithdrawn(msg.sender, pending.amount);
        stakeToken.safeTransfer(msg.sender, pending.amount);
    }

    /// @notice Take `amount` of `account`'s JCT stake to the treasury, first from its active stake, then from its
    /// pending unstake (cool-down or not), for the dispute or finding that `evidence` hashes. Open while paused.
    /// @dev `evidence` can slash only once, so a slash re-sent after a crash reverts with EvidenceUsed instead of
    /// taking the stake twice. The pending unstake keeps its unlock time.
    function slash(address account, uint256 amount, bytes32 evidence) external onlyRole(SLASHER_ROLE) {
        if (amount == 0) revert ZeroAmount();
        if (evidence == 0) revert ZeroEvidence();
        if (slashedEvidence[evidence]) revert EvidenceUsed(evidence);
        uint256 staked = stakeOf[account];
        PendingUnstake storage pending = pendingUnstakeOf[account];
        uint256 pendingAmount = pending.amount;
        if (amount > staked + pendingAmount) revert InsufficientStake(staked + pendingAmount, amount);
        slashedEvidence[evidence] = true;
        uint256 fromStake = amount < staked ? amount : staked;
        uint256 fromPending = amount - fromStake;
        stakeOf[account] = staked - fromStake;
        if (fromPending != 0) {
            if (fromPending == pendingAmount) {
                delete pendingUnstakeOf[account];
            } else {
                pending.amount = pendingAmount - fromPending;
            }
        }
        totalStaked -= amount;
        emit StakeSlashed(account, evidence, amount, fromStake, fromPending);
        stakeToken.safeTransfer(treasury, amount);
    }

    // --- Administration ---------------------------------------------------------------------------

    /// @notice Allow or forbid `token` for deposits (claims pay whatever token a posted leaf names).
    function setTokenAllowed(address token, bool allowed) external onlyRole(DEFAULT_ADMIN_ROLE) {
        allowedTokens[token] = allowed;
        emit TokenAllowed(token, allowed);
    }

    /// @notice Send slashed JCT to `treasury` from now on.
    function setTreasury(address treasury_) external onlyRole(DEFAULT_ADMIN_ROLE) {
        if (treasury_ == address(0)) revert ZeroAddress();
        treasury = treasury_;
        emit TreasurySet(treasury_);
    }

    /// @notice Set the delay between an unstake request and its withdrawal, for requests made from now on.
    function setUnstakeCooldown(uint256 cooldown) external onlyRole(DEFAULT_ADMIN_ROLE) {
        unstakeCooldown = cooldown;
        emit UnstakeCooldownSet(cooldown);
    }

    /// @notice Set the delay between posting a batch and its root becoming claimable, for batches posted from now on.
    function setClaimDelay(uint256 delay) external onlyRole(DEFAULT_ADMIN_ROLE) {
        claimDelay = delay;
        emit ClaimDelaySet(delay);
    }

    /// @notice Stop claims, deposits and new stake; unstaking stays open so stakers can always leave.
    function pause() external onlyRole(GUARDIAN_ROLE) {
        if (paused) revert EnforcedPause();
        paused = true;
        claimRoot = 0;
        emit Paused(msg.sender);
    }

    /// @notice Resume claims, deposits and new stake.
    function unpause() external onlyRole(GUARDIAN_ROLE) {
        if (!paused) revert ExpectedPause();
        paused = false;
        claimRoot = activeRoot;
        emit Unpaused(msg.sender);
    }

    function _requireNotPaused() private view {
        if (paused) revert EnforcedPause();
    }

    /// @dev Balance of JCT that claims may pay out: everything except staked JCT.
    function _unstakedBalance() private view returns (uint256) {
        uint256 balance = stakeToken.balanceOf(address(this));
        return balance > totalStaked ? balance - totalStaked : 0;
    }
}
