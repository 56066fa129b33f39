"""Diffusion sampling: step rules, the sequential sampler, parallel solvers (Picard,
triangular Anderson), warm starts and the latency budget. Imports torch only."""
