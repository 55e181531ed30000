"""Market data: sources (sample, synthetic, files), validation, repair, export."""

from trade_agent.data.ingest import IngestReport, load_file, load_market_data
from trade_agent.data.synthetic import SyntheticSpec, bayes_directional_accuracy, generate_synthetic

__all__ = [
    "IngestReport",
    "SyntheticSpec",
    "bayes_directional_accuracy",
    "generate_synthetic",
    "load_file",
    "load_market_data",
]
