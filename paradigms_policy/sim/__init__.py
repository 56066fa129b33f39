"""Simulation: robosuite tasks from robomimic env metadata (envs), gym-pusht PushT (pusht),
scripted experts (experts) and receding-horizon evaluation (rollout).

Submodules import robosuite / gymnasium lazily where they can, so importing this package is cheap.
"""
