"""Undo the process-wide recursion limits that py_ecc (100,000) and py-evm (12,288) set when imported.

With such a limit a deeply nested input (JSON, a repr, a pickle) overflows the C stack and kills the
process instead of raising RecursionError. They are imported here first, then the limit is put back.
"""

import sys

# Enough for Django, DRF and the embedded chain's EVM (whose contracts call at most a few levels deep).
RECURSION_LIMIT = 4000


def recursion_limit_restore() -> None:
    """Import the modules that raise the limit, then set it back to RECURSION_LIMIT."""
    import eth  # noqa: F401  (py-evm)
    import py_ecc  # noqa: F401

    sys.setrecursionlimit(RECURSION_LIMIT)
