"""Exact max-plus operations on int64 arrays where one operand is concave.

Every function keeps infeasible entries at ``NEG`` (minus infinity). Callers keep
finite magnitudes below 2**59 so that no sum of three finite terms and ``NEG``
can overflow int64.
"""

from collections.abc import Callable

import numpy as np

NEG = -(1 << 62)
_FINITE_FLOOR = NEG // 2
# Up to these sizes a plain shift-and-compare loop beats divide and conquer (measured at 45,000 units).
DIRECT_MAX_ITEMS = 64
DIRECT_MAX_SHIFTS = 256

IntArray = np.ndarray


def clamp_infeasible(values: IntArray) -> IntArray:
    """Reset every entry derived from an infeasible one back to NEG, in place."""
    values[values < _FINITE_FLOOR] = NEG
    return values


def monotone_row_max(
    lo: IntArray, hi: IntArray, value: Callable[[IntArray, IntArray], IntArray]
) -> tuple[IntArray, IntArray]:
    """Return each row's maximum and leftmost argmax column, level by level.

    Row ``r`` ranges over columns ``lo[r]..hi[r]``; both bounds are non-decreasing in
    ``r`` and the leftmost argmax must be too (true for ``f[c] + g(r - c)`` with ``g``
    concave; ``best_shifted`` orders its rows to match). ``value(rows, cols)`` returns entries.
    Each level of the divide and conquer is one batch of numpy operations, so the
    work is O((rows + columns) log rows) element operations.
    """
    n_rows = lo.size
    best = np.full(n_rows, NEG, dtype=np.int64)
    arg = np.zeros(n_rows, dtype=np.int64)
    if n_rows == 0:
        return best, arg
    r0 = np.array([0])
    r1 = np.array([n_rows - 1])
    c0 = lo[:1].copy()
    c1 = hi[-1:].copy()
    while r0.size:
        mid = (r0 + r1) // 2
        first_col = np.maximum(c0, lo[mid])
        last_col = np.minimum(c1, hi[mid])
        counts = last_col - first_col + 1
        starts = np.cumsum(counts) - counts
        segment = np.repeat(np.arange(mid.size), counts)
        cols = np.arange(int(counts.sum())) - starts[segment] + first_col[segment]
        values = value(mid[segment], cols)
        seg_max = np.maximum.reduceat(values, starts)
        positions = np.where(values == seg_max[segment], np.arange(values.size), values.size)
        opt = cols[np.minimum.reduceat(positions, starts)]
        best[mid] = seg_max
        arg[mid] = opt
        left = mid > r0
        right = mid < r1
        r0, r1, c0, c1 = (
            np.concatenate((r0[left], mid[right] + 1)),
            np.concatenate((mid[left] - 1, r1[right])),
            np.concatenate((c0[left], opt[right])),
            np.concatenate((opt[left], c1[right])),
        )
    return best, arg


def residue_order(length: int, step: int) -> IntArray:
    """Return 0..length-1 grouped by residue modulo step, ascending within each group."""
    padded = -(-length // step) * step
    grid = np.arange(padded).reshape(-1, step).T.ravel()
    return grid[grid < length]


def add_class(f: IntArray, size: int, prefix: IntArray) -> tuple[IntArray, IntArray]:
    """Return h[q] = max_k f[q - size*k] + prefix[k] and the largest maximising k.

    ``prefix`` (prefix[0] == 0) must be concave: the running totals of one bid class
    sorted by value, highest first.
    """
    length = f.size
    items = prefix.size - 1
    if items <= DIRECT_MAX_ITEMS:
        h = f.copy()
        taken = np.zeros(length, dtype=np.int64)
        for k in range(1, min(items, (length - 1) // size) + 1):
            shift = size * k
            candidate = f[: length - shift] + prefix[k]
            better = candidate >= h[shift:]
            np.copyto(h[shift:], candidate, where=better)
            taken[shift:][better] = k
        return clamp_infeasible(h), taken
    order = residue_order(length, size)
    steps = order // size
    rows = np.arange(length)
    f_ordered = f[order]
    best, arg = monotone_row_max(
        rows - np.minimum(items, steps),
        rows,
        lambda r, c: f_ordered[c] + prefix[r - c],
    )
    h = np.empty(length, dtype=np.int64)
    taken = np.empty(length, dtype=np.int64)
    h[order] = best
    taken[order] = rows - arg
    return clamp_infeasible(h), taken


def best_shifted(v: IntArray, cost: IntArray, size: int, max_k: int) -> IntArray:
    """Return g[k] = max_q v[q] - cost[q + size*k] for k = 0..max_k (NEG where no q fits).

    ``cost`` must be convex and as long as ``v``.
    """
    length = v.size
    g = np.full(max_k + 1, NEG, dtype=np.int64)
    reachable = min(max_k, (length - 1) // size)
    if reachable + 1 <= DIRECT_MAX_SHIFTS:
        for k in range(reachable + 1):
            shift = size * k
            g[k] = (v[: length - shift] - cost[shift:]).max()
        return clamp_infeasible(g)
    order = residue_order(length, size)
    v_ordered = v[order]
    group_size = np.bincount(np.arange(length) % size, minlength=size)
    group_start = np.cumsum(group_size) - group_size
    k_count = np.minimum(max_k, group_size - 1) + 1
    group = np.repeat(np.arange(size), k_count)
    row_start = np.cumsum(k_count) - k_count
    # Rows run k downwards inside each residue group, which makes the argmax non-decreasing.
    k_of_row = k_count[group] - 1 - (np.arange(group.size) - row_start[group])
    best, _ = monotone_row_max(
        group_start[group],
        group_start[group] + group_size[group] - 1 - k_of_row,
        lambda r, c: v_ordered[c] - cost[order[c] + size * k_of_row[r]],
    )
    np.maximum.at(g, k_of_row, best)
    return clamp_infeasible(g)
