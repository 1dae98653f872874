"""Time the data contributions' costly steps: MinHash signatures, redaction checks and signature checks.

MinHash is compared with a pure-Python loop over the same permutations (the baseline, in this process).
Run from the repository root: ``python -m benchmarks.contributions_bench``.
"""

import random
import statistics
import time

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from contributions import minhash, redaction, signing

SEED = 20261201
SIZES = (40, 1_000, 8_192)
REPEATS = 9


def _text(rng: random.Random, size: int) -> str:
    words = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 9))) for _ in range(3000)]
    return " ".join(rng.choice(words) for _ in range(3000))[:size]


def _baseline(text: str) -> list[int]:
    """The same signature computed value by value in Python."""
    hashes = [minhash._hash32(shingle) for shingle in minhash.shingles(text)]
    return [
        min((int(a) * x + int(b)) % minhash._PRIME for x in hashes) for a, b in zip(minhash._A, minhash._B, strict=True)
    ]


def _median_ms(call) -> float:
    times = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def main() -> None:
    rng = random.Random(SEED)
    print("MinHash signature (64 permutations, 5-character shingles), median of", REPEATS)
    for size in SIZES:
        text = _text(rng, size)
        assert _baseline(text) == minhash.signature(text)
        fast, slow = _median_ms(lambda t=text: minhash.signature(t)), _median_ms(lambda t=text: _baseline(t))
        print(f"  {size:>6} chars: numpy {fast:8.2f} ms   python loop {slow:8.2f} ms   ratio {slow / fast:6.1f}x")
    print("Redaction findings (server check), median of", REPEATS)
    for size in SIZES:
        text = _text(rng, size)
        print(f"  {size:>6} chars: {_median_ms(lambda t=text: redaction.findings(t)):8.3f} ms")
    print("Redaction findings on adversarial 8 KiB inputs (linear patterns), median of", REPEATS)
    for label, text in [
        ("'a' x 8192", "a" * 8192),
        ("'1-' x 4096", "1-" * 4096),
        ("'a.' x 4096", "a." * 4096),
        ("'a@' + 'b.' x 4000", "a@" + "b." * 4000),
        ("'-' x 8192", "-" * 8192),
    ]:
        print(f"  {label:>20}: {_median_ms(lambda t=text: redaction.findings(t)):8.3f} ms")
    key = Ed25519PrivateKey.generate()
    public = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    body = (_text(rng, 8_192) * 50).encode()
    signature = key.sign(signing.SIGNING_PREFIX + body)
    verify = _median_ms(
        lambda: signing.signature_valid(algorithm="Ed25519", public_key=public, signature=signature, body=body)
    )
    print(f"Ed25519 check of a 400 KiB upload body: {verify:.3f} ms (median of {REPEATS})")


if __name__ == "__main__":
    main()
