"""Training code every task shares: data io and splits, layers, the fit loop, schedules, export helpers, plots."""
