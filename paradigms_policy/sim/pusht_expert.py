"""A scripted PushT expert: a quasi-static pushing planner on the T's keypoints.

gym-pusht's block has zero velocity damping (it stops as soon as nothing touches it) and
frictionless contacts, so a push of the disk pusher (radius 15) at a point ``c`` of the T's
outline moves the block like a free body hit along the inward edge normal ``-n``: its centre of
gravity moves along ``-n`` and it turns by ``(r x -n) / I`` (``r`` from the centre of gravity,
``I`` the block's moment). For every candidate contact along the outline the expert predicts how
far such a push lowers the mean keypoint distance to the goal pose, picks the best contact (with
hysteresis, so it does not dither between contacts), walks around the block to it on an inflated
convex hull, and pushes; it re-plans every control step from the observed keypoints.

Observations and actions are those of :class:`paradigms_policy.sim.pusht.PushTLowDimEnv`:
``agent_pos`` [2], ``keypoint`` [8, 2] (pixels), action = the pusher's target position.
Per episode it draws its own speed, clearance, contact choice noise and action noise, so
demonstrations vary.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PUSHER_RADIUS = 15.0
BLOCK_MASS = 1.0
BLOCK_MOMENT = 3000.0  # gym-pusht sets the T's moment explicitly (two bar moments)
COG_BODY = np.array([0.0, 45.0])  # centre of gravity in the block frame
GOAL_POSE = np.array([256.0, 256.0, np.pi / 4])  # gym-pusht's fixed goal (x, y, angle)
# gym-pusht's keypoint order, in the block frame (bar corners, then stem corners)
KEYPOINTS_BODY = np.array([[-60.0, 0.0], [60.0, 0.0], [60.0, 30.0], [-60.0, 30.0],
                           [-15.0, 30.0], [15.0, 30.0], [15.0, 120.0], [-15.0, 120.0]])
# the T's outline, counter-clockwise in the block frame (outward normal of edge a->b: (dy, -dx))
OUTLINE_BODY = np.array([[-60.0, 0.0], [60.0, 0.0], [60.0, 30.0], [15.0, 30.0],
                         [15.0, 120.0], [-15.0, 120.0], [-15.0, 30.0], [-60.0, 30.0]])
HULL_BODY = np.array([[-60.0, 0.0], [60.0, 0.0], [60.0, 30.0], [15.0, 120.0], [-15.0, 120.0], [-60.0, 30.0]])
ARENA = (8.0, 503.0)  # where the T fits between the walls
WORKSPACE = (22.0, 489.0)  # pusher centres that clear gym-pusht's walls (at 5 and 506, 2 px thick)


def rot(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, -s], [s, c]])


def cross2(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return a[..., 0] * b[..., 1] - a[..., 1] * b[..., 0]


def pose_from_keypoints(keypoints: np.ndarray) -> np.ndarray:
    """(x, y, angle) of the block from its 8 observed keypoints (least-squares rigid fit)."""
    kp = np.asarray(keypoints, dtype=np.float64).reshape(-1, 2)
    if kp.shape != KEYPOINTS_BODY.shape:
        raise ValueError(f"PushT keypoints have shape {kp.shape}, expected {KEYPOINTS_BODY.shape}")
    body_c, kp_c = KEYPOINTS_BODY - KEYPOINTS_BODY.mean(0), kp - kp.mean(0)
    angle = float(np.arctan2(cross2(body_c, kp_c).sum(), (body_c * kp_c).sum()))
    position = kp.mean(0) - rot(angle) @ KEYPOINTS_BODY.mean(0)
    return np.array([position[0], position[1], angle])


def keypoints_of(pose: np.ndarray) -> np.ndarray:
    """World keypoints [..., 8, 2] of pose(s) [..., 3]."""
    pose = np.asarray(pose, dtype=np.float64)
    c, s = np.cos(pose[..., 2])[..., None], np.sin(pose[..., 2])[..., None]
    x = c * KEYPOINTS_BODY[:, 0] - s * KEYPOINTS_BODY[:, 1] + pose[..., 0:1]
    y = s * KEYPOINTS_BODY[:, 0] + c * KEYPOINTS_BODY[:, 1] + pose[..., 1:2]
    return np.stack([x, y], axis=-1)


GOAL_KEYPOINTS = keypoints_of(GOAL_POSE)


def keypoint_error(pose: np.ndarray) -> np.ndarray:
    """Mean distance [px] between the keypoints of pose(s) [..., 3] and the goal's."""
    return np.linalg.norm(keypoints_of(pose) - GOAL_KEYPOINTS, axis=-1).mean(-1)


def wall_overlap(pose: np.ndarray) -> np.ndarray:
    """How far [px, summed over corners] the T of pose(s) [..., 3] would reach into the walls."""
    corners = keypoints_of(pose)  # the T's outline corners are its keypoints
    return (np.clip(ARENA[0] - corners, 0, None) + np.clip(corners - ARENA[1], 0, None)).sum((-1, -2))


def wall_clearance(pose: np.ndarray) -> np.ndarray:
    """Smallest distance [px] between the T's corners of pose(s) [..., 3] and the walls."""
    corners = keypoints_of(pose)
    return np.minimum(corners - ARENA[0], ARENA[1] - corners).min((-1, -2))


def unjam_scores(pose: np.ndarray, usable: np.ndarray, distance: float = 20.0) -> tuple[np.ndarray, np.ndarray]:
    """(gain in wall clearance of a ``distance`` px push, that distance) per contact; -inf where not ``usable``."""
    outcomes = push_outcomes(pose, CONTACTS_BODY, CONTACT_NORMALS_BODY, np.array([distance]))[:, 0]
    gain = wall_clearance(outcomes) - wall_clearance(pose)
    return np.where(usable, gain, -np.inf), np.full(len(usable), distance)


def _edge_normals(polygon: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(edge start points, outward unit normals) of a counter-clockwise polygon."""
    d = np.roll(polygon, -1, axis=0) - polygon
    normals = np.stack([d[:, 1], -d[:, 0]], axis=1)
    return polygon, normals / np.linalg.norm(normals, axis=1, keepdims=True)


def point_polygon_distance(points: np.ndarray, polygon: np.ndarray) -> np.ndarray:
    """Distance from points [N, 2] to the boundary of a polygon (negative inside)."""
    a, b = polygon, np.roll(polygon, -1, axis=0)
    p = np.asarray(points, dtype=np.float64)[:, None, :]
    ab = b - a
    t = np.clip(((p - a) * ab).sum(-1) / (ab * ab).sum(-1), 0.0, 1.0)
    dist = np.linalg.norm(p - (a + t[..., None] * ab), axis=-1).min(1)
    # even-odd rule for inside
    y, x = p[..., 1], p[..., 0]
    crosses = ((a[:, 1] > y) != (b[:, 1] > y)) & (
        x < (b[:, 0] - a[:, 0]) * (y - a[:, 1]) / np.where(b[:, 1] == a[:, 1], 1e-12, b[:, 1] - a[:, 1]) + a[:, 0])
    inside = crosses.sum(1) % 2 == 1
    return np.where(inside, -dist, dist)


def segment_clear(p0: np.ndarray, p1: np.ndarray, pose: np.ndarray, margin: float) -> bool:
    """Can the pusher move straight from p0 to p1 keeping ``margin`` px between it and the block?"""
    n = max(2, int(np.linalg.norm(p1 - p0) / 2.0) + 1)
    points = p0 + np.linspace(0.0, 1.0, n)[:, None] * (p1 - p0)
    R = rot(pose[2])
    body = (points - pose[:2]) @ R
    return bool(np.all(point_polygon_distance(body, OUTLINE_BODY) >= PUSHER_RADIUS + margin))


def _contact_candidates(spacing: float = 3.0, corner_gap: float = 4.0) -> tuple[np.ndarray, np.ndarray]:
    """Body-frame contact points along the outline and their outward normals, where the pusher fits."""
    starts, normals = _edge_normals(OUTLINE_BODY)
    points, point_normals = [], []
    for a, b, n in zip(starts, np.roll(OUTLINE_BODY, -1, axis=0), normals):
        length = float(np.linalg.norm(b - a))
        for t in np.arange(corner_gap, length - corner_gap + 1e-9, spacing):
            points.append(a + (b - a) * t / length)
            point_normals.append(n)
    points, point_normals = np.array(points), np.array(point_normals)
    centres = points + point_normals * PUSHER_RADIUS
    fits = point_polygon_distance(centres, OUTLINE_BODY) >= PUSHER_RADIUS - 0.5
    return points[fits], point_normals[fits]


CONTACTS_BODY, CONTACT_NORMALS_BODY = _contact_candidates()
PUSH_DISTANCES = np.array([1.0, 2.0, 3.0, 5.0, 8.0, 12.0, 18.0, 25.0, 35.0, 50.0, 70.0, 100.0])


def push_outcomes(pose: np.ndarray, contacts: np.ndarray, normals: np.ndarray,
                  distances: np.ndarray = PUSH_DISTANCES) -> np.ndarray:
    """Predicted poses [C, D, 3] after pushing each body-frame contact [C, 2] inward by each distance [D]."""
    R = rot(pose[2])
    c = contacts @ R.T + pose[:2]
    n = normals @ R.T
    cog = R @ COG_BODY + pose[:2]
    r = c - cog
    f = -n
    rate = 1.0 / BLOCK_MASS + cross2(r, n) ** 2 / BLOCK_MOMENT  # contact's normal speed per unit impulse
    v = f / BLOCK_MASS / rate[:, None]
    w = cross2(r, f) / BLOCK_MOMENT / rate
    # integrate the push in a few sub-steps: the lever arm turns with the block
    out = np.empty((len(contacts), len(distances), 3))
    for j, s in enumerate(distances):
        theta = pose[2] + w * s
        new_cog = cog + v * s
        offset = np.stack([np.cos(theta) * COG_BODY[0] - np.sin(theta) * COG_BODY[1],
                           np.sin(theta) * COG_BODY[0] + np.cos(theta) * COG_BODY[1]], axis=1)
        out[:, j, :2] = new_cog - offset
        out[:, j, 2] = theta
    return out


def _inflated_hull(pose: np.ndarray, clearance: float, arc_points: int = 3) -> np.ndarray:
    """World polygon (counter-clockwise) around the T's convex hull, ``clearance`` px outside it."""
    R = rot(pose[2])
    starts, normals = _edge_normals(HULL_BODY)
    prev_normals = np.roll(normals, 1, axis=0)
    points = []
    for vertex, n0, n1 in zip(HULL_BODY, prev_normals, normals):
        a0, a1 = np.arctan2(n0[1], n0[0]), np.arctan2(n1[1], n1[0])
        a1 = a0 + (a1 - a0) % (2 * np.pi)
        for a in np.linspace(a0, a1, arc_points):
            points.append(vertex + clearance / np.cos((a1 - a0) / (2 * (arc_points - 1))) * np.array([np.cos(a), np.sin(a)]))
    return np.array(points) @ R.T + pose[:2]


def _segment_hits_convex(p0: np.ndarray, p1: np.ndarray, polygon: np.ndarray, eps: float = 1e-6,
                         shrink: float = 0.5) -> bool:
    """Does the segment p0-p1 pass through a convex counter-clockwise polygon shrunk by ``shrink`` px (Cyrus-Beck)?

    The shrink lets a path run along the polygon's own edges.
    """
    _, normals = _edge_normals(polygon)
    d = p1 - p0
    t_in, t_out = 0.0, 1.0
    for a, n in zip(polygon, normals):
        num, den = float(n @ (a - p0)) - shrink, float(n @ d)
        if abs(den) < 1e-12:
            if num < 0:
                return False  # parallel and outside this edge
            continue
        t = num / den
        if den < 0:
            t_in = max(t_in, t)
        else:
            t_out = min(t_out, t)
        if t_in > t_out - eps:
            return False
    return t_out - t_in > 1e-3


def _exit_point(point: np.ndarray, direction: np.ndarray, polygon: np.ndarray, extra: float = 2.0) -> np.ndarray:
    """Where the ray from ``point`` along ``direction`` leaves a convex polygon (plus ``extra`` px)."""
    _, normals = _edge_normals(polygon)
    t_exit = np.inf
    for a, n in zip(polygon, normals):
        den = float(n @ direction)
        if den > 1e-12:
            t_exit = min(t_exit, float(n @ (a - point)) / den)
    t_exit = max(t_exit, 0.0) if np.isfinite(t_exit) else 0.0
    return point + direction * (t_exit + extra)


def _inside_convex(point: np.ndarray, polygon: np.ndarray) -> bool:
    _, normals = _edge_normals(polygon)
    return bool(np.all(((point - polygon) * normals).sum(1) < 0))


def in_workspace(points: np.ndarray, margin: float = 0.0) -> np.ndarray:
    """Which points lie inside the workspace shrunk by ``margin`` px."""
    return np.all((points >= WORKSPACE[0] + margin) & (points <= WORKSPACE[1] - margin), axis=-1)


def plan_path(start: np.ndarray, goal: np.ndarray, hull: np.ndarray) -> list[np.ndarray] | None:
    """Shortest way points from ``start`` to ``goal`` (both outside ``hull``) around a convex polygon.

    Hull corners outside the workspace (beyond a wall) are not used; None when no way remains.
    """
    if not _segment_hits_convex(start, goal, hull):
        return [goal]
    nodes = [start, goal, *hull[in_workspace(hull, 4.0)]]
    n = len(nodes)
    dist = np.full(n, np.inf)
    prev = [-1] * n
    dist[0] = 0.0
    done = np.zeros(n, dtype=bool)
    for _ in range(n):
        i = int(np.argmin(np.where(done, np.inf, dist)))
        if not np.isfinite(dist[i]) or i == 1:
            break
        done[i] = True
        for j in range(n):
            if done[j] or _segment_hits_convex(nodes[i], nodes[j], hull):
                continue
            alt = dist[i] + float(np.linalg.norm(nodes[j] - nodes[i]))
            if alt < dist[j]:
                dist[j], prev[j] = alt, i
    if not np.isfinite(dist[1]):
        return None
    path, i = [], 1
    while i > 0:
        path.append(nodes[i])
        i = prev[i]
    return path[::-1]


GRID_CELL = 6.0  # px, the fallback planner's grid
_FREE_CACHE: dict[tuple, np.ndarray] = {}


def free_cells(pose: np.ndarray, margin: float) -> np.ndarray:
    """[n, n] grid cells whose centre is in the workspace and ``margin`` px clear of the block (cached per pose)."""
    key = (*np.round(pose, 6).tolist(), round(float(margin), 6))
    if key not in _FREE_CACHE:
        n = int(np.ceil(512.0 / GRID_CELL))
        flat = ((np.stack(np.meshgrid(np.arange(n), np.arange(n), indexing="ij"), -1) + 0.5) * GRID_CELL).reshape(-1, 2)
        clearance = point_polygon_distance((flat - pose[:2]) @ rot(pose[2]), OUTLINE_BODY)
        _FREE_CACHE.clear()  # one pose at a time: the block has not moved while several contacts are tried
        _FREE_CACHE[key] = (in_workspace(flat) & (clearance >= PUSHER_RADIUS + margin)).reshape(n, n)
    return _FREE_CACHE[key].copy()


def _grid_index(points: np.ndarray) -> np.ndarray:
    n = int(np.ceil(512.0 / GRID_CELL))
    return np.clip((np.asarray(points) // GRID_CELL).astype(int), 0, n - 1)


def wave(free: np.ndarray, source: tuple[int, int], stop: tuple[int, int] | None = None) -> np.ndarray:
    """Breadth-first step counts (8-connected) from ``source`` over ``free`` cells; -1 where unreachable."""
    level = np.full(free.shape, -1, dtype=np.int64)
    level[source] = 0
    front = np.zeros(free.shape, dtype=bool)
    front[source] = True
    step = 0
    while front.any() and (stop is None or level[stop] < 0):
        step += 1
        grown = front.copy()
        grown[1:] |= front[:-1]
        grown[:-1] |= front[1:]
        grown[:, 1:] |= grown[:, :-1].copy()
        grown[:, :-1] |= grown[:, 1:].copy()
        front = grown & free & (level < 0)
        level[front] = step
    return level


def _unlock_start(free: np.ndarray, start: np.ndarray, pose: np.ndarray) -> None:
    """Let the pusher leave from where it is even when it touches the block (cells near it, barely clear)."""
    n = free.shape[0]
    i, j = _grid_index(start)
    lo_i, hi_i, lo_j, hi_j = max(i - 3, 0), min(i + 4, n), max(j - 3, 0), min(j + 4, n)
    ii, jj = np.meshgrid(np.arange(lo_i, hi_i), np.arange(lo_j, hi_j), indexing="ij")
    centres = (np.stack([ii, jj], -1).reshape(-1, 2) + 0.5) * GRID_CELL
    clear = point_polygon_distance((centres - pose[:2]) @ rot(pose[2]), OUTLINE_BODY) >= PUSHER_RADIUS - 4.0
    free[ii.reshape(-1)[clear], jj.reshape(-1)[clear]] = True
    free[i, j] = True


def reachable(start: np.ndarray, points: np.ndarray, pose: np.ndarray, margin: float = 1.0) -> np.ndarray:
    """Which of ``points`` [N, 2] the pusher can reach from ``start`` without touching the block (grid wave)."""
    free = free_cells(pose, margin)
    _unlock_start(free, start, pose)
    level = wave(free, tuple(_grid_index(start)))
    cells = _grid_index(points)
    return level[cells[:, 0], cells[:, 1]] >= 0


def grid_path(start: np.ndarray, goal: np.ndarray, pose: np.ndarray, margin: float = 2.0) -> list[np.ndarray] | None:
    """Way points from ``start`` to ``goal`` on a grid of free pusher positions (a fallback for cluttered cases).

    Free: inside the workspace and ``margin`` px clear of the block. A breadth-first wave from the goal
    gives each free cell its step count; the path descends it and is then shortened where straight
    segments are clear. None when the goal cannot be reached.
    """
    n = int(np.ceil(512.0 / GRID_CELL))
    centres = (np.stack(np.meshgrid(np.arange(n), np.arange(n), indexing="ij"), -1) + 0.5) * GRID_CELL  # [n, n, 2]
    free = free_cells(pose, margin)
    _unlock_start(free, start, pose)
    si, sj = _grid_index(start)
    gi, gj = _grid_index(goal)
    free[gi, gj] = True
    level = wave(free, (gi, gj), stop=(si, sj))
    if level[si, sj] < 0:
        return None
    cells = [(si, sj)]
    while level[cells[-1]] > 0:
        i, j = cells[-1]
        neighbours = [(i + di, j + dj) for di in (-1, 0, 1) for dj in (-1, 0, 1)
                      if (di or dj) and 0 <= i + di < n and 0 <= j + dj < n and level[i + di, j + dj] >= 0]
        cells.append(min(neighbours, key=lambda c: level[c]))
    points = [start] + [centres[c] for c in cells[1:-1]] + [goal]
    path, k = [], 0
    while k < len(points) - 1:  # shortcut: the farthest point reachable in a straight line
        far = len(points) - 1
        while far > k + 1 and not segment_clear(points[k], points[far], pose, margin - 1.0):
            far -= 1
        path.append(points[far])
        k = far
    return path


@dataclass
class PushTStyle:
    """Per-episode randomization of how the expert moves."""

    speed: float  # max pusher target step per control step [px]
    clearance: float  # extra distance kept from the block while travelling [px]
    push_gain: float  # how far ahead of the pusher the push target is, relative to the predicted best push
    max_push: float  # cap on one push target step [px]
    temperature: float  # softmax temperature over contact scores [px of error reduction per step] (0 = greedy)
    noise_std: float  # gaussian noise on the commanded target [px]
    keep: float  # keep the current contact while its score is at least this fraction of the best


def draw_pusht_style(rng: np.random.Generator) -> PushTStyle:
    return PushTStyle(
        speed=float(rng.uniform(40.0, 60.0)),
        clearance=float(rng.uniform(6.0, 12.0)),
        push_gain=float(rng.uniform(0.8, 1.2)),
        max_push=float(rng.uniform(20.0, 30.0)),
        temperature=float(rng.uniform(0.0, 0.1)),
        noise_std=float(rng.uniform(0.0, 1.5)),
        keep=float(rng.uniform(0.5, 0.7)),
    )


class PushTExpert:
    """Closed-loop pushing planner for gym-pusht's PushT (see the module docstring)."""

    def __init__(self, seed: int | None = None) -> None:
        self.reset(seed)

    def reset(self, seed: int | None = None) -> None:
        self.rng = np.random.default_rng(seed)
        self.style = draw_pusht_style(self.rng)
        self.contact: int | None = None  # index into CONTACTS_BODY being approached or pushed
        self.committed = 0.0  # predicted error reduction of that contact when it was chosen
        self._path: list[np.ndarray] = []  # way points to the contact, planned for ...
        self._path_contact: int | None = None  # ... this contact and ...
        self._path_pose = np.zeros(3)  # ... this block pose
        self._history: list[np.ndarray] = []  # the last pusher positions (to notice being stuck)
        self._banned: dict[int, int] = {}  # contact -> step until which it is not tried again
        self._steps = 0
        self.phase = "start"

    # -- scoring ---------------------------------------------------------------------------------
    def contact_scores(self, pose: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(best predicted error reduction, the push distance achieving it) for every candidate contact."""
        outcomes = push_outcomes(pose, CONTACTS_BODY, CONTACT_NORMALS_BODY)
        errors = keypoint_error(outcomes)  # [C, D]
        errors[wall_overlap(outcomes) > wall_overlap(pose) + 0.5] = np.inf  # pushes into a wall do not happen
        best = errors.argmin(1)
        reduction = keypoint_error(pose) - errors[np.arange(len(best)), best]
        return reduction, PUSH_DISTANCES[best]

    def pusher_pose(self, pose: np.ndarray, index: int, extra: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
        """World (pusher centre touching contact ``index`` + ``extra`` px out, world outward normal)."""
        R = rot(pose[2])
        n = R @ CONTACT_NORMALS_BODY[index]
        return R @ CONTACTS_BODY[index] + pose[:2] + n * (PUSHER_RADIUS + extra), n

    # -- acting ----------------------------------------------------------------------------------
    def act(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        agent = np.asarray(obs["agent_pos"], dtype=np.float64)
        pose = pose_from_keypoints(obs["keypoint"])
        reduction, push = self.contact_scores(pose)
        s = self.style

        # where is the pusher relative to the block: touching a contact?
        touching = self._touching(agent, pose)
        R = rot(pose[2])
        centres = (CONTACTS_BODY + CONTACT_NORMALS_BODY * PUSHER_RADIUS) @ R.T + pose[:2]
        travel = np.linalg.norm(centres - agent, axis=1)
        # contacts the pusher can get to: in the workspace and joined to it by free space (not shut in by a wall)
        entry = np.clip(centres + (CONTACT_NORMALS_BODY @ R.T) * 4.0, WORKSPACE[0] + 1.0, WORKSPACE[1] - 1.0)
        ok = in_workspace(centres) & reachable(agent, entry, pose)
        reduction = np.where(ok, reduction, -np.inf)
        if ok.any() and reduction.max() <= 0.2:  # jammed against the walls: first push the T clear of them
            reduction, push = unjam_scores(pose, ok)
        if touching is not None and self.contact is not None and \
                np.linalg.norm(centres[touching] - centres[self.contact]) < 12.0:
            self.contact = touching  # the contact slides along the edge while pushing
        # error reduction per control step, counting the steps to get there and to push
        rate = reduction / (1.0 + (travel + push) / s.speed)
        self._history = (self._history + [agent])[-5:]
        if self.phase == "move" and self.contact is not None and len(self._history) == 5 and \
                np.linalg.norm(self._history[-1] - self._history[0]) < 2.0:  # stuck on the way: try another
            self._banned[self.contact] = self._steps + 20
            self.contact, self._path = None, []
        self._steps += 1
        for index, until in self._banned.items():
            if until >= self._steps:
                rate[index] = -np.inf
        for _ in range(10):  # a contact whose way is blocked by a wall is dropped and another chosen
            if self.contact is None:
                keep = False
            elif touching is not None:  # pushing: go on while this push is still among the best ones
                keep = reduction[self.contact] > 0.2 and rate[self.contact] >= s.keep * float(rate.max())
            else:  # on the way: stay committed unless the block moved and spoiled this contact
                keep = reduction[self.contact] >= max(0.2, 0.5 * self.committed)
            if not keep:
                self.contact = self._choose(rate)
                self.committed = float(reduction[self.contact])
            target_pose, normal = self.pusher_pose(pose, self.contact)
            if touching is not None and np.linalg.norm(target_pose - agent) < 4.0:
                self.phase = "push"
                step = min(s.push_gain * push[self.contact], s.max_push)
                target = agent - normal * step
                break
            self.phase = "move"
            target = self._travel_target(agent, pose, target_pose, normal)
            if target is not None:
                break
            rate[self.contact] = -np.inf
            self.contact = None
        else:
            target = agent  # nowhere reachable: hold still
        target = target + self.rng.normal(0.0, s.noise_std, size=2)
        return np.clip(target, *WORKSPACE).astype(np.float32)

    def _choose(self, value: np.ndarray) -> int:
        """A contact by softmax over ``value`` at the style's temperature (greedy at 0)."""
        temperature = self.style.temperature
        if temperature <= 0 or not np.isfinite(value).any():
            return int(np.argmax(value))
        logits = np.where(np.isfinite(value), (value - value[np.isfinite(value)].max()) / temperature, -np.inf)
        probs = np.exp(logits) / np.exp(logits).sum()
        return int(self.rng.choice(len(value), p=probs))

    def _touching(self, agent: np.ndarray, pose: np.ndarray) -> int | None:
        """Index of the candidate contact the pusher touches now, if any."""
        R = rot(pose[2])
        body = R.T @ (agent - pose[:2])
        if point_polygon_distance(body[None], OUTLINE_BODY)[0] > PUSHER_RADIUS + 2.0:
            return None
        centres = CONTACTS_BODY + CONTACT_NORMALS_BODY * PUSHER_RADIUS
        return int(np.argmin(np.linalg.norm(centres - body, axis=1)))

    def _travel_target(self, agent: np.ndarray, pose: np.ndarray, contact_pose: np.ndarray,
                       normal: np.ndarray) -> np.ndarray | None:
        """Next pusher target on the way to ``contact_pose``, around the block, at most ``speed`` px away.

        None when walls leave no way there.
        """
        s = self.style
        inner = (WORKSPACE[0] + 1.0, WORKSPACE[1] - 1.0)
        if self._path and self._path_contact == self.contact and \
                np.abs(self._path_pose - pose).max() < 1.0 and np.abs(self._path_pose[2] - pose[2]) < 0.01:
            waypoints = self._path  # follow the plan made for this contact while the block stays put
        else:
            approach = np.clip(contact_pose + normal * s.clearance, *inner)  # less clearance next to a wall
            if (np.linalg.norm(agent - contact_pose) <= np.linalg.norm(approach - contact_pose) + 2.0
                    and segment_clear(agent, contact_pose, pose, -1.0)):
                waypoints = [contact_pose]  # in the corridor in front of the contact: go in
            elif segment_clear(agent, approach, pose, 2.0):
                waypoints = [approach, contact_pose]
            else:
                around = self._around(agent, pose, approach, normal)
                if around is None:  # walls or the T's corners in the way: plan on a grid instead
                    around = grid_path(agent, approach, pose, 1.0)  # the margin reachable() uses
                if around is None:
                    return None
                waypoints = around + [contact_pose]
            waypoints = [np.clip(wp, *inner) for wp in waypoints]
            self._path, self._path_contact, self._path_pose = waypoints, self.contact, pose.copy()
        while len(waypoints) > 1 and np.linalg.norm(waypoints[0] - agent) <= 3.0:
            waypoints.pop(0)
        delta = waypoints[0] - agent
        dist = float(np.linalg.norm(delta))
        return agent + delta * min(1.0, s.speed / max(dist, 1e-9))

    def _around(self, agent: np.ndarray, pose: np.ndarray, approach: np.ndarray,
                normal: np.ndarray) -> list[np.ndarray] | None:
        """Way points around the block's inflated convex hull from ``agent`` to outside ``approach`` (None: blocked)."""
        hull = _inflated_hull(pose, PUSHER_RADIUS + self.style.clearance)
        waypoints: list[np.ndarray] = []
        start = agent
        if _inside_convex(agent, hull):  # next to the block (e.g. after a push): back away first
            R = rot(pose[2])
            away = R @ self._outward(R.T @ (agent - pose[:2]))
            start = _exit_point(agent, away, hull)
            waypoints.append(start)
        end = self._pocket_exit(approach, normal, pose, hull) if _inside_convex(approach, hull) else approach
        if end is None:
            return None
        path = plan_path(start, end, hull)
        return None if path is None else waypoints + path + ([approach] if end is not approach else [])

    @staticmethod
    def _pocket_exit(approach: np.ndarray, normal: np.ndarray, pose: np.ndarray, hull: np.ndarray) -> np.ndarray | None:
        """A point outside ``hull`` with a straight, clear way to ``approach`` in one of the T's concave corners.

        Tries the contact's normal first, then the normals of the hull edges (a wall may block one way out).
        """
        _, hull_normals = _edge_normals(hull)
        nearest = np.argsort(((approach - hull) * hull_normals).sum(1))[::-1][:3]  # the edges it is closest to
        for direction in [normal, *hull_normals[nearest]]:
            end = _exit_point(approach, direction, hull)
            if in_workspace(end, 4.0) and segment_clear(end, approach, pose, -1.0):
                return end
        return None

    @staticmethod
    def _outward(body_point: np.ndarray) -> np.ndarray:
        """Outward normal of the outline edge nearest a block-frame point."""
        starts, normals = _edge_normals(OUTLINE_BODY)
        ends = np.roll(OUTLINE_BODY, -1, axis=0)
        ab = ends - starts
        t = np.clip(((body_point - starts) * ab).sum(1) / (ab * ab).sum(1), 0.0, 1.0)
        d = np.linalg.norm(body_point - (starts + t[:, None] * ab), axis=1)
        return normals[int(np.argmin(d))]


def run_pusht_expert(env, expert: PushTExpert, seed: int, max_steps: int = 300) -> dict:
    """One episode of the expert; returns success, max coverage and length (for measuring the expert)."""
    obs, _ = env.reset(seed=seed)
    coverage, success, steps = 0.0, False, 0
    for steps in range(1, max_steps + 1):
        obs, _, terminated, truncated, info = env.step(expert.act(obs))
        coverage = max(coverage, info["coverage"])
        success = success or info["is_success"]
        if terminated or truncated:
            break
    return {"seed": seed, "success": bool(success), "max_coverage": float(coverage), "length": steps}
