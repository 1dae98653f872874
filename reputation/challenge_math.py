"""The verification challenge's computation (pure): a matrix product whose checksum the platform knows.

A and B are n x n matrices of MINSTD (Park-Miller) draws modulo 65521, from a fresh seed per challenge;
the answer is sum((A.B)[i][j] * (i + 1) * (j + 1)) mod 65521. Every intermediate fits in a double's 53 bits,
so busybox awk inside the container computes exactly what Python computes here.
"""

PRIME = 65521
MINSTD_MULTIPLIER = 48271
MINSTD_MODULUS = 2_147_483_647

# The workload: `sh -c SCRIPT challenge SEED N` (the seed and size as arguments: the agent refuses JANCTION_*
# environment variables, reserved for the platform). It reports the GPU the container sees (nvidia-smi when
# present, "none" otherwise) and the answer on stdout.
SCRIPT = r"""
if command -v nvidia-smi >/dev/null 2>&1; then
  echo "gpu=$(nvidia-smi --query-gpu=name,memory.total --format=csv,noheader,nounits | head -n 1)"
else
  echo "gpu=none"
fi
awk -v seed="$1" -v n="$2" 'BEGIN {
  x = seed
  for (i = 0; i < n * n; i++) { x = (x * 48271) % 2147483647; a[i] = x % 65521 }
  for (i = 0; i < n * n; i++) { x = (x * 48271) % 2147483647; b[i] = x % 65521 }
  s = 0
  for (i = 0; i < n; i++) for (j = 0; j < n; j++) {
    c = 0
    for (k = 0; k < n; k++) c = (c + a[i * n + k] * b[k * n + j]) % 65521
    s = (s + c * (i + 1) * (j + 1)) % 65521
  }
  printf "answer=%d\n", s
}'
"""


def command(seed: int, n: int) -> list[str]:
    """Return the workload's command line for one challenge."""
    return ["sh", "-c", SCRIPT, "challenge", str(seed), str(n)]


def answer(seed: int, n: int) -> int:
    """Return the checksum the workload prints for `seed` and size `n`."""
    x = seed
    draws = []
    for _ in range(2 * n * n):
        x = x * MINSTD_MULTIPLIER % MINSTD_MODULUS
        draws.append(x % PRIME)
    a, b = draws[: n * n], draws[n * n :]
    total = 0
    for i in range(n):
        for j in range(n):
            c = 0
            for k in range(n):
                c = (c + a[i * n + k] * b[k * n + j]) % PRIME
            total = (total + c * (i + 1) * (j + 1)) % PRIME
    return total
