"""Stage: walk-forward evaluation over calendar folds, with multiple-testing statistics."""
