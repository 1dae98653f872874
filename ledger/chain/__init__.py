"""Talk to Janction's contracts: compiled artifacts, deployment and signed transactions (no Django)."""
