"""HTTP serving of registered models (``trade-agent serve``)."""
