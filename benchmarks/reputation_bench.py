"""Time score recomputation: 100,000 nodes x 30 days of evidence from scratch, and one incremental day.

Both forms are reputation.beta's integer steps (vectorised with numpy), so they give identical numbers; the
benchmark checks that too. The baseline is the same fold in pure Python per subject, on a 2,000-node sample,
scaled to 100,000 nodes. Run from the repository root: ``python -m benchmarks.reputation_bench``.
"""

import platform
import statistics
import time

import numpy as np

from reputation import beta

NODES = 100_000
DAYS = 30
REPEATS = 7
PYTHON_SAMPLE = 2_000
FACTOR = beta.decay_factor(30)
PRIOR = 1_000_000


def _evidence(rng):
    """Per node and day: uptime (up to 1 unit each way), about 3 placements, now and then a loss or a challenge."""
    up = rng.integers(800_000, 1_000_001, size=(DAYS, NODES), dtype=np.int64)
    positive = up + rng.poisson(3, size=(DAYS, NODES)).astype(np.int64) * 1_000_000
    negative = (1_000_000 - up) + (rng.random((DAYS, NODES)) < 0.02) * 3_000_000
    return positive, negative.astype(np.int64)


def _median(fn) -> tuple[float, object]:
    times, result = [], None
    for _ in range(REPEATS):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def main() -> None:
    rng = np.random.default_rng(7)
    positive, negative = _evidence(rng)

    def scratch():
        alpha, beta_ = beta.from_scratch_vector(positive, negative, factor=FACTOR)
        return beta.score_vector(alpha, beta_, prior_positive=PRIOR, prior_negative=PRIOR)

    scratch_s, scores = _median(scratch)
    alpha29, beta29 = beta.from_scratch_vector(positive[:-1], negative[:-1], factor=FACTOR)

    def incremental():
        alpha, beta_ = beta.advance_vector(alpha29, beta29, positive[-1], negative[-1], factor=FACTOR)
        return beta.score_vector(alpha, beta_, prior_positive=PRIOR, prior_negative=PRIOR)

    incremental_s, incremental_scores = _median(incremental)
    assert np.array_equal(scores, incremental_scores), "incremental and from-scratch scores differ"

    def python_sample():
        out = []
        for node in range(PYTHON_SAMPLE):
            days = [(d, int(positive[d, node]), int(negative[d, node])) for d in range(DAYS)]
            state = beta.fold(days, factor=FACTOR)
            out.append(beta.score_micro(state.alpha, state.beta, prior_positive=PRIOR, prior_negative=PRIOR))
        return out

    python_s, python_scores = _median(python_sample)
    assert python_scores == scores[:PYTHON_SAMPLE].tolist(), "the pure-Python fold differs from the vectorised one"
    python_scaled = python_s * NODES / PYTHON_SAMPLE

    print(f"reputation_bench on {platform.python_implementation()} {platform.python_version()}, numpy {np.__version__}")
    print(f"{NODES:,} nodes x {DAYS} days, median of {REPEATS} runs")
    print(f"  from scratch (numpy):          {scratch_s * 1000:9.1f} ms   (goal < 10,000 ms)")
    print(f"  one incremental day (numpy):   {incremental_s * 1000:9.1f} ms   (goal < 1,000 ms)")
    print(f"  from scratch (pure Python):    {python_scaled * 1000:9.1f} ms   (scaled from {PYTHON_SAMPLE:,} nodes)")
    print(f"  numpy vs pure Python:          {python_scaled / scratch_s:9.1f} x faster")
    print(f"  scores identical incremental vs scratch: yes; median score {int(np.median(scores)) / 1e6:.6f}")


if __name__ == "__main__":
    main()
