"""Datasets in the PATN format (DeepFashion, Market-1501, synthetic, users' own)."""
