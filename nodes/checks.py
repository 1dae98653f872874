"""Range checks of what agents send, against the columns that store it and what real hardware can be.

An agent is the provider's program and the protocol is public: every number it sends is checked here
before it is used or stored, so a value that fits its protobuf type but not its column (a uint32 power
reading above PostgreSQL's `integer`) is refused as the sender's fault instead of failing a shared write.
"""

from __future__ import annotations

from janction.errors import ValidationFailed

INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1

# Telemetry: the column's range, narrowed to what a GPU can report.
MAX_UTILIZATION_PERCENT = 100
MAX_TEMPERATURE_CELSIUS = 200
MAX_POWER_MILLIWATTS = 5_000_000  # 5 kW: several times any GPU board's limit
MAX_COMPUTE_PROCESSES = 65_535

# Hello: text fields as long as their columns; inventories bounded so one Hello is a small write.
MAX_GPUS_PER_HELLO = 64
MAX_VGPUS_PER_HELLO = 512
MAX_PLACEMENTS_PER_HELLO = 1024
MAX_GPU_MEMORY_BYTES = 2**42  # 4 TiB
MAX_GPU_INDEX = 1023


class AgentMessageInvalid(ValidationFailed):
    """A message from an agent that no honest agent sends; it costs its sender a strike."""

    code = "agent_message_invalid"


def sample_problem(sample) -> str:
    """Return why a GPU telemetry sample is out of range, or '' when every value fits."""
    limits = (
        ("utilization_percent", MAX_UTILIZATION_PERCENT),
        ("memory_used_bytes", INT64_MAX),
        ("temperature_celsius", MAX_TEMPERATURE_CELSIUS),
        ("power_milliwatts", MAX_POWER_MILLIWATTS),
        ("compute_processes", MAX_COMPUTE_PROCESSES),
    )
    for name, limit in limits:
        value = getattr(sample, name)
        if not 0 <= value <= limit:
            return f"GPU {sample.index}: {name}={value} is outside 0..{limit}"
    return ""


def check_text(value: str, *, field: str, max_length: int) -> str:
    """Return `value` when it fits its column, else refuse it naming the field."""
    if len(value) > max_length:
        raise AgentMessageInvalid(f"{field} is {len(value)} characters long; at most {max_length} are allowed.")
    return value


def check_int(value: int, *, field: str, low: int = 0, high: int = INT64_MAX) -> int:
    """Return `value` when it lies in [low, high], else refuse it naming the field."""
    if not low <= value <= high:
        raise AgentMessageInvalid(f"{field}={value} is outside {low}..{high}.")
    return value
