"""Does a policy's observation spec fit what an environment or robot provides?

Shared by Policy.check_compatible and the simulator's task check; torch-free so the sim edge can
use it without importing the network code."""

from __future__ import annotations

from typing import Any, Mapping


def observation_mismatches(needed: Mapping[str, Any], provided: Mapping[str, Any]) -> list[str]:
    """One line per observation key the policy needs that ``provided`` lacks or shapes differently."""
    problems = []
    for key, shape in needed.items():
        want = [int(d) for d in shape]
        if key not in provided:
            problems.append(f"observation {key!r} {want} is not provided (provided: {sorted(provided)})")
        elif [int(d) for d in provided[key]] != want:
            problems.append(f"observation {key!r} has shape {[int(d) for d in provided[key]]}, the policy needs {want}")
    return problems
