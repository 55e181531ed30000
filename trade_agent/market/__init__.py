"""The market every stage trades in: panels, observations, the one fill/cost simulator,
trading environments, backtest, trading metrics."""
