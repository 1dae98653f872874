"""On-chain settlement: Merkle batches of cumulative amounts owed, their posting, and chain events."""
