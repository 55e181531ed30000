"""trade-agent: reproducible, incremental training of hierarchical trading models."""

__version__ = "0.1.0"
