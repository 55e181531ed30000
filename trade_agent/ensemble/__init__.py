"""Stage 4: several agents and hybrids combined into one portfolio (the `ensemble` stage)."""
