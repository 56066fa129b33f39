"""Training helpers: EMA of weights, learning-rate schedule, the policy network container and its loss."""
