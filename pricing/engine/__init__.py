"""Integer core of the PVCG clearing engine; pricing.pvcg is its public face."""
