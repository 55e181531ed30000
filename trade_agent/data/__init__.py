"""Stage `prepare`: market data sources (sample, synthetic, files), validation, repair, export."""
