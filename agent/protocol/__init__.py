"""The agent's wire contract: the protobuf messages and the usage-report signature.

This package is the only part of `agent` the Django side may import (an import-linter contract in
pyproject.toml holds that): `gen/` is generated from `proto/janction/agent/v1/agent.proto` by
`make proto`, `signing.py` defines the bytes a usage report's signature covers. Nothing here imports
Django or the rest of the agent, so the agent still ships by itself. See docs/architecture.md.
"""
