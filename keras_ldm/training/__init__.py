"""Training utilities: moving averages, learning-rate schedules, seed state saved with the model."""
