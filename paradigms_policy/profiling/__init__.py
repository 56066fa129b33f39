"""Parts of the offline latency profiler (``paradigms-profile``, the thin hydra app in profile.py).

``episodes``: observation histories per control cycle; ``synthetic``: a random checkpoint of a
given network shape; ``policies``: one Policy per sampler and what identifies the checkpoint;
``measure``: timed control cycles and their error against sequential; ``stats``: summaries;
``report``: JSON, table and plot; ``compare``: several runs side by side (CUDA graphs against
eager, for ``benchmarks/gpu_check.sh``).
"""
