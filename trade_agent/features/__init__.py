"""Stage `features`: causal features, forward-looking labels, chronological splits."""
