"""Simulation: robosuite tasks from robomimic env metadata (envs), gym-pusht PushT (pusht),
scripted experts (experts) and receding-horizon evaluation (rollout).

Submodules import robosuite / gymnasium lazily where they can, so importing this package is cheap.

Importing it also chooses software OpenGL for robosuite's cameras unless MUJOCO_GL is set
(``rendering.use_software_gl``): robosuite fixes its choice when it is first imported.
"""

from paradigms_policy.sim.rendering import use_software_gl

use_software_gl()
