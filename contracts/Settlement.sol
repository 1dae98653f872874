// SPDX-License-Identifier: UNLICENSED
pragma solidity 0.8.37;

import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";
import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";

/// @notice The part of JanctionToken that Settlement uses to fund rewards.
interface IRewardEmitter {
    function emitRewards(address to, uint256 amount) external;
}

/// @title Janction settlement (version 3): delayed batch roots, cumulative claims with two claim bits per allocation,
/// deposits, JCT staking and emission.
/// @notice The operator posts one Merkle root per settlement batch, strictly in sequence. A leaf owes `account` the
/// total `cumulative` ever earned in `token` under an allocation `index` that never changes for that (token,
/// account), and carries the claim state the batch was built from: `previous` (the index's cumulative amount in the
/// root claimable then), `paidBefore` (what it had been paid then) and the index's two claim bits then. It is
/// packed into three words (see `claim`) hashed as OpenZeppelin's StandardMerkleTree does. A claim against the
/// claimable root pays what is owed beyond what was already paid. A posted root becomes claimable only after
/// `claimDelay`, during which the guardian can reject it (and must check the leaves' claim state against the
/// chain); the guardian can also pause, which closes claims by zeroing the claimable root.
/// @dev Claims are the hot path, so they read two storage slots (the claimable root and the claim-bit word; JCT
/// claims also the stake total) and toggle the bit before transferring (no guard). Two bits per index, 128 indices
/// to a word, so a first claim often writes a word another index already made non-zero. A claim emits no event of
/// its own: it is the token's Transfer out of this contract that no StakeWithdrawn or StakeSlashed precedes. Staked
/// JCT is kept apart from the JCT that claims pay out. The slasher (a role of its own, neither the operator nor the
/// guardian) can take part of a stake, active or pending unstake, to the treasury, once per evidence hash.
contract Settlement is AccessControl {
    using SafeERC20 for IERC20;

    struct PendingUnstake {
        uint256 amount;
        uint256 unlockAt;
    }

    /// @notice One leaf and its proof, for claimMany.
    struct Leaf {
        uint256 key;
        uint256 tokenAmount;
        uint256 accountPrevious;
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

    /// @dev Two claim bits per allocation index, 128 indices to a word (see claim).
    mapping(uint256 slot => uint256) private _claimBits;
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
    error AlreadyClaimed(uint256 index);
    error InsufficientLiquidity(address token, uint256 needed, uint256 available);
    error TokenNotAllowed(address token);
    error EnforcedPause();
    error ExpectedPause();
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

    /// @notice Pay a leaf of the claimable root: `key` = index (bits 0-63) | the two claim bits of the index as the
    /// leaf's batch was built (bits 64-65) | the leaf's parity p (bit 66) | paidBefore (bits 160-255);
    /// `tokenAmount` = token | cumulative amount << 160; `accountPrevious` = account | the previous root's
    /// cumulative amount << 160. Pays the account its cumulative amount less what it was already paid.
    function claim(uint256 key, uint256 tokenAmount, uint256 accountPrevious, bytes32[] calldata proof) external {
        bytes32 root_ = claimRoot;
        if (root_ == 0) revert ClaimsClosed();
        _claim(root_, key, tokenAmount, accountPrevious, proof);
    }

    /// @notice Claim several leaves (say, an account's USDC and JCT) in one transaction.
    function claimMany(Leaf[] calldata leaves) external {
        bytes32 root_ = claimRoot;
        if (root_ == 0) revert ClaimsClosed();
        for (uint256 i = 0; i < leaves.length; ++i) {
            Leaf calldata leaf = leaves[i];
            _claim(root_, leaf.key, leaf.tokenAmount, leaf.accountPrevious, leaf.proof);
        }
    }

    /// @notice Return the words of claim bits `slots` (index i: bits 2(i % 128) and 2(i % 128) + 1 of word i / 128).
    function claimWords(uint256[] calldata slots) external view returns (uint256[] memory words) {
        words = new uint256[](slots.length);
        for (uint256 i = 0; i < slots.length; ++i) {
            words[i] = _claimBits[slots[i]];
        }
    }

    /// @notice Return what the account of a leaf has been paid so far under its index, as a claim with that leaf
    /// sees it now: its cumulative amount once claimed against the leaf's root, else its claimed base.
    function paidOf(uint256 key, uint256 tokenAmount, uint256 accountPrevious) external view returns (uint256) {
        uint256 index = uint64(key);
        uint256 p = (key >> 66) & 1;
        uint256 changed = ((_claimBits[index >> 7] >> ((index & 127) << 1)) ^ (key >> 64)) & 3;
        if ((changed >> p) & 1 != 0) return tokenAmount >> 160;
        return (changed >> (p ^ 1)) & 1 != 0 ? accountPrevious >> 160 : key >> 160;
    }

    function _claim(
        bytes32 root_,
        uint256 key,
        uint256 tokenAmount,
        uint256 accountPrevious,
        bytes32[] calldata proof
    ) private {
        bool valid;
        assembly ("memory-safe") {
            // The leaf, keccak256(bytes.concat(keccak256(abi.encode(key, tokenAmount, accountPrevious)))),
            // then MerkleProof.verifyCalldata's sorted-pair hashing up the proof, all in scratch memory.
            let free := mload(0x40)
            mstore(free, key)
            mstore(add(free, 0x20), tokenAmount)
            mstore(add(free, 0x40), accountPrevious)
            mstore(0x00, keccak256(free, 0x60))
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
        unchecked {
            uint256 index = uint64(key);
            uint256 slot = index >> 7;
            uint256 shift = (index & 127) << 1;
            uint256 word = _claimBits[slot];
            uint256 p = (key >> 66) & 1;
            // Which of the index's two bits changed since the leaf's batch was built: its own (p) only by a claim
            // against this root, the other only by a claim against the previous root after the build.
            uint256 changed = ((word >> shift) ^ (key >> 64)) & 3;
            if ((changed >> p) & 1 != 0) revert AlreadyClaimed(index);
            uint256 already = (changed >> (p ^ 1)) & 1 != 0 ? accountPrevious >> 160 : key >> 160;
            uint256 cumulative = tokenAmount >> 160;
            if (cumulative <= already) revert NothingToClaim(index);
            uint256 amount = cumulative - already;
            address token = address(uint160(tokenAmount));
            if (token == address(stakeToken)) {
                // Stakers' JCT is not the payout pool: only what exceeds the total stake can be claimed.
                // (Other tokens need no check: the transfer itself reverts when the contract holds too little.)
                uint256 available = _unstakedBalance();
                if (amount > available) revert InsufficientLiquidity(token, amount, available);
            }
            _claimBits[slot] = word ^ (1 << (shift + p));
            // No event of its own: the token's Transfer from this contract records the claim.
            IERC20(token).safeTransfer(address(uint160(accountPrevious)), amount);
        }
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
