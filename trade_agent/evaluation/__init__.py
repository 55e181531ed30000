"""Every model on one split: positions, the metrics suite, the `evaluate` stage report,
inference from the registry."""
