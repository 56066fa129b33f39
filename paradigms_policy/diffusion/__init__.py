"""Diffusion sampling: step rules, the sequential sampler, the fixed-point loop with its update
rules (Picard, triangular Anderson, Newton), the sampler registry and ``auto`` selection, warm
starts, inpainting and the latency budget. Imports torch only."""
