"""paradigms_policy: real-time DiffusionPolicy sampling with parallel (Picard / Anderson) solvers."""

__version__ = "0.1.0"
