"""Which OpenGL robosuite renders camera images with: Mesa's software OSMesa unless the user chose one.

robosuite picks ``MUJOCO_GL=egl`` when it is first imported and nothing is set; EGL needs a working
driver, which machines without a GPU may lack. ``use_software_gl`` must therefore run before robosuite is
imported: ``paradigms_policy.sim`` calls it on import, and the env factories call it again. It needs
Debian's ``libosmesa6`` (``make sim-deps``).
"""

from __future__ import annotations

import os

__all__ = ["use_software_gl"]


def use_software_gl() -> None:
    """Set ``MUJOCO_GL=osmesa`` (and ``PYOPENGL_PLATFORM=osmesa`` with it) unless MUJOCO_GL is already set."""
    os.environ.setdefault("MUJOCO_GL", "osmesa")
    if os.environ["MUJOCO_GL"] == "osmesa":
        os.environ.setdefault("PYOPENGL_PLATFORM", "osmesa")
