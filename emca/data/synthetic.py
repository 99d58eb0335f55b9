"""A procedurally drawn pose-transfer dataset in the PATN on-disk layout, for tests and smoke training.

Each identity is a cartoon person with its own skin tone, hair, clothing colours and patterns (plain,
stripes, checks, dots) and its own background (the same for all of its images, like one photo shoot);
each image shows that person in a fresh random pose: standing, walking, arms raised, waving, hands on
hips, wide stance or reaching, seen from the front, three-quarter, side or back, framed to fill most of
the picture (sometimes zoomed so that the feet leave the frame).

The body is a small 3D stick model (body-height units; u = the person's left, v = forward, w = up)
turned by a yaw angle and projected orthographically. Limbs are tapered capsules, the torso a
quadrilateral, the head a shaded sphere; parts are painted back to front by depth, with analytic
anti-aliased coverage, and garment patterns are laid out in each part's own frame so that they move
with the body. Everything is numpy; PIL writes the PNGs. All sizes are relative to the image height, so
any resolution works, and a seed gives the same bytes on every run.

Layout written (``root/``): ``train/*.png``, ``test/*.png``, ``synthetic-annotation-{train,test}.csv``
(keypoints are the joints' true pixel positions (row, col), -1 only when outside the image) and
``synthetic-pairs-{train,test}.csv`` (all ordered pairs of one identity's images, after the PATN rule
that drops images missing a hip or a shoulder). Images are named ``id0003_pose02.png``; test identities
are numbered after the training ones, so the splits never share a person.
"""

from __future__ import annotations

import colorsys
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from emca.data.annotations import write_annotations, write_pairs
from emca.data.dataset import make_layout
from emca.data.keypoints import JOINT_NAMES, MISSING, REQUIRED_FOR_PAIRS, visible
from emca.errors import DataError
from emca.io import atomic_directory
from emca.options import bounded

DEFAULT_HEIGHT = 64
DEFAULT_WIDTH = 48
DEFAULT_NUM_TRAIN_IDENTITIES = 60
DEFAULT_NUM_TEST_IDENTITIES = 12
DEFAULT_POSES_PER_IDENTITY = 6
BACKGROUND_CHOICES = ("mixed", "plain", "textured")
MIN_SIZE = 16


@dataclass(frozen=True)
class SyntheticPeople:
    """Who the synthetic dataset shows (``data.synthetic``; ``emca data synthetic``'s count flags): the options
    of :func:`generate_synthetic_dataset` besides the root, the size, the seed and the file names."""

    num_train_identities: int = bounded(DEFAULT_NUM_TRAIN_IDENTITIES, minimum=1)
    num_test_identities: int = bounded(DEFAULT_NUM_TEST_IDENTITIES, minimum=1)
    poses_per_identity: int = bounded(DEFAULT_POSES_PER_IDENTITY, minimum=2)  # a pair needs two images of a person
    background: str = bounded("mixed", choices=BACKGROUND_CHOICES)


_SKIN_TONES = (
    (255, 224, 196),
    (241, 194, 160),
    (234, 192, 134),
    (224, 172, 135),
    (198, 134, 96),
    (161, 102, 68),
    (120, 75, 50),
    (90, 56, 37),
)
_HAIR_COLOURS = ((22, 18, 16), (60, 40, 25), (110, 70, 40), (205, 165, 95), (150, 60, 30), (175, 175, 170))
_POSE_KINDS = ("stand", "walk", "arms_up", "wave", "hands_on_hips", "wide", "reach")
_POSE_WEIGHTS = (0.18, 0.2, 0.14, 0.14, 0.12, 0.12, 0.1)
_HEAD_RADIUS = 0.062  # body-height units, like every length below


def _unit(vector: np.ndarray) -> np.ndarray:
    return vector / np.linalg.norm(vector)


def _random_colour(rng: np.random.Generator, saturation: tuple[float, float], value: tuple[float, float]) -> np.ndarray:
    hsv = (rng.random(), rng.uniform(*saturation), rng.uniform(*value))
    return 255.0 * np.array(colorsys.hsv_to_rgb(*hsv))


def _jitter(rng: np.random.Generator, palette: tuple[tuple[int, int, int], ...], spread: float) -> np.ndarray:
    base = np.array(palette[rng.integers(len(palette))], dtype=np.float64)
    return np.clip(base + rng.normal(0.0, spread, 3), 0, 255)


@dataclass(frozen=True)
class Fabric:
    """A two-colour pattern laid out in a part's own frame (along / across the part, body units)."""

    pattern: str  # plain | stripes | checks | dots
    colour: np.ndarray
    accent: np.ndarray
    period: float

    @staticmethod
    def sample(rng: np.random.Generator) -> Fabric:
        colour = _random_colour(rng, (0.25, 0.95), (0.25, 0.95))
        accent = _random_colour(rng, (0.0, 0.9), (0.15, 1.0))
        pattern = ("plain", "stripes", "checks", "dots")[rng.choice(4, p=(0.25, 0.35, 0.2, 0.2))]
        return Fabric(pattern, colour, accent, period=float(rng.uniform(0.06, 0.1)))

    def paint(self, along: np.ndarray, across: np.ndarray) -> np.ndarray:
        """Colour (H, W, 3) at part coordinates ``along`` / ``across`` (H, W) in body units."""
        phase_along, phase_across = along / self.period, across / self.period
        if self.pattern == "stripes":
            use_accent = np.floor(phase_along) % 2 == 1
        elif self.pattern == "checks":
            use_accent = (np.floor(phase_along) + np.floor(phase_across)) % 2 == 1
        elif self.pattern == "dots":
            offset_along, offset_across = phase_along % 1 - 0.5, phase_across % 1 - 0.5
            use_accent = offset_along**2 + offset_across**2 < 0.3**2
        else:
            use_accent = np.zeros(along.shape, dtype=bool)
        return np.where(use_accent[..., None], self.accent, self.colour)


@dataclass(frozen=True)
class Backdrop:
    """A per-identity background, drawn in coordinates relative to the image size."""

    kind: str  # plain | gradient | wall_floor | stripes | checks | blotches
    colour: np.ndarray
    accent: np.ndarray
    position: float  # horizon height, stripe / tile period or gradient direction, by kind
    blotches: np.ndarray  # (5, 4, 3) uint8 low-resolution colour field for "blotches"

    @staticmethod
    def sample(rng: np.random.Generator, choice: str) -> Backdrop:
        textured = ("gradient", "wall_floor", "stripes", "checks", "blotches")
        if choice == "plain" or (choice == "mixed" and rng.random() < 1 / 3):
            kind = "plain"
        else:
            kind = textured[rng.integers(len(textured))]
        colour = _random_colour(rng, (0.0, 0.45), (0.35, 0.95))
        accent = np.clip(colour + rng.normal(0.0, 45.0, 3), 0, 255)
        # mostly lightness variation with a little tint, like an out-of-focus room
        shading = rng.normal(0.0, 30.0, (5, 4, 1)) + rng.normal(0.0, 12.0, (5, 4, 3))
        blotches = np.clip(colour + shading, 0, 255).astype(np.uint8)
        return Backdrop(kind, colour, accent, float(rng.uniform(0.0, 1.0)), blotches)

    def render(self, height: int, width: int) -> np.ndarray:
        """The background as a float (H, W, 3) image in [0, 255]."""
        rows = (np.arange(height)[:, None] + 0.5) / height
        cols = (np.arange(width)[None, :] + 0.5) / width * (width / height)  # square units of the height
        if self.kind == "blotches":
            small = Image.fromarray(self.blotches)
            return np.asarray(small.resize((width, height), Image.Resampling.BICUBIC), dtype=np.float64)
        if self.kind == "gradient":
            angle = np.pi * self.position
            weight = np.clip(0.5 + (rows - 0.5) * np.cos(angle) + (cols - 0.5) * np.sin(angle), 0, 1)
        elif self.kind == "wall_floor":
            horizon = 0.6 + 0.25 * self.position
            weight = (rows > horizon) * (0.7 + 0.3 * (rows - horizon) / (1.0 - horizon))
        elif self.kind == "stripes":
            period = 0.08 + 0.12 * self.position
            weight = ((cols + 0.3 * rows * (self.position > 0.5)) / period) % 1 < 0.5
        elif self.kind == "checks":
            period = 0.1 + 0.12 * self.position
            weight = (np.floor(rows / period) + np.floor(cols / period)) % 2
        else:
            weight = np.zeros((height, width))
        weight = np.broadcast_to(np.asarray(weight, dtype=np.float64), (height, width))[..., None]
        return (1 - weight) * self.colour + weight * self.accent


@dataclass(frozen=True)
class Appearance:
    """Everything that stays the same across one identity's images."""

    skin: np.ndarray
    hair: np.ndarray
    hair_style: str  # short | long | buzz
    top: Fabric
    long_sleeves: bool
    bottom: Fabric
    shorts: bool
    shoes: np.ndarray
    backdrop: Backdrop

    @staticmethod
    def sample(rng: np.random.Generator, background: str) -> Appearance:
        return Appearance(
            skin=_jitter(rng, _SKIN_TONES, 6.0),
            hair=_jitter(rng, _HAIR_COLOURS, 8.0),
            hair_style=("short", "long", "buzz")[rng.choice(3, p=(0.5, 0.35, 0.15))],
            top=Fabric.sample(rng),
            long_sleeves=bool(rng.random() < 0.5),
            bottom=Fabric.sample(rng),
            shorts=bool(rng.random() < 0.25),
            shoes=_random_colour(rng, (0.0, 0.6), (0.05, 0.6)),
            backdrop=Backdrop.sample(rng, background),
        )


def _limb_direction(side: float, abduction: float, flexion: float) -> np.ndarray:
    """Unit direction of a limb hanging down, swung forward by ``flexion`` and out by ``abduction``."""
    return np.array(
        [side * np.sin(abduction), np.cos(abduction) * np.sin(flexion), -np.cos(abduction) * np.cos(flexion)]
    )


def _bend(limb: np.ndarray, toward: np.ndarray, angle: float) -> np.ndarray:
    """Rotate unit ``limb`` by ``angle`` toward direction ``toward`` (made perpendicular to it)."""
    axis = toward - np.dot(toward, limb) * limb
    if np.linalg.norm(axis) < 1e-6:
        return limb
    return np.cos(angle) * limb + np.sin(angle) * _unit(axis)


def _sample_limb_angles(rng: np.random.Generator, kind: str) -> dict[str, np.ndarray]:
    """Per-side (right, left) angles in radians: arm/leg abduction and flexion, elbow/knee bend."""
    deg = np.deg2rad

    def pair(low: float, high: float) -> np.ndarray:
        return deg(rng.uniform(low, high, 2))  # (right, left)

    angles = {
        "arm_abduction": pair(4, 18),
        "arm_flexion": deg(rng.normal(0, 8, 2)),
        "elbow": pair(0, 25),
        "elbow_medial": pair(0, 30),
        "leg_abduction": pair(0, 7),
        "leg_flexion": deg(rng.normal(0, 4, 2)),
        "knee": pair(0, 8),
    }
    if kind == "walk":
        stride = deg(rng.uniform(15, 35)) * rng.choice((-1, 1))
        angles["leg_flexion"] = np.array([stride, -stride])
        angles["knee"] = np.where(angles["leg_flexion"] < 0, pair(15, 45), pair(0, 15))
        angles["arm_flexion"] = -0.8 * angles["leg_flexion"] + deg(rng.normal(0, 5, 2))
        angles["elbow"] = pair(10, 35)
    elif kind == "arms_up":
        angles["arm_abduction"], angles["arm_flexion"] = pair(120, 175), deg(rng.normal(0, 15, 2))
        angles["elbow"], angles["elbow_medial"] = pair(0, 40), pair(40, 90)
    elif kind == "wave":
        side = rng.integers(2)
        angles["arm_abduction"][side] = deg(rng.uniform(90, 170))
        angles["elbow"][side] = deg(rng.uniform(20, 90))
        angles["elbow_medial"][side] = deg(rng.uniform(60, 90))  # the forearm rises toward the head
    elif kind == "hands_on_hips":
        angles["arm_abduction"], angles["arm_flexion"] = pair(35, 55), pair(-15, 5)
        angles["elbow"], angles["elbow_medial"] = pair(80, 110), deg(np.full(2, 90.0))
    elif kind == "wide":
        angles["leg_abduction"], angles["knee"] = pair(12, 28), pair(0, 15)
        angles["arm_abduction"], angles["elbow"] = pair(40, 100), pair(0, 30)
    elif kind == "reach":
        reaching = rng.random(2) < 0.7
        angles["arm_flexion"] = np.where(reaching, pair(50, 100), angles["arm_flexion"])
    return angles


def _sample_body(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """3D body points (body units, pelvis at the origin) for a random pose, keyed by name.

    Keys: the 18 joint names, plus ``head``, ``head_forward`` (a unit direction), hand and toe tips
    and the end of long hair.
    """
    kind = _POSE_KINDS[rng.choice(len(_POSE_KINDS), p=_POSE_WEIGHTS)]
    angles = _sample_limb_angles(rng, kind)
    deg = np.deg2rad
    up = _unit(np.array([np.sin(deg(rng.normal(0, 3))), np.sin(deg(rng.normal(2, 4))), 1.0]))
    twist = deg(rng.normal(0, 6))
    shoulder_side = np.array([np.cos(twist), np.sin(twist), 0.0])
    forward, leftward = np.array([0.0, 1.0, 0.0]), np.array([1.0, 0.0, 0.0])
    points = {"neck": up * 0.3}
    head_yaw = deg(rng.normal(0, 15))
    head_forward = np.array([np.sin(head_yaw), np.cos(head_yaw), 0.0])
    head_left = np.array([np.cos(head_yaw), -np.sin(head_yaw), 0.0])
    head = points["neck"] + up * 0.105
    points.update(head=head, head_forward=head_forward, nose=head + head_forward * 0.06 - up * 0.012)
    for prefix, side in (("right", -1.0), ("left", 1.0)):
        index = 0 if side < 0 else 1
        shoulder = points["neck"] + side * shoulder_side * 0.115 - up * 0.015
        upper_arm = _limb_direction(side, angles["arm_abduction"][index], angles["arm_flexion"][index])
        medial = (
            np.cos(angles["elbow_medial"][index]) * forward - side * np.sin(angles["elbow_medial"][index]) * leftward
        )
        forearm = _bend(upper_arm, medial, angles["elbow"][index])
        hip = side * np.array([0.075, 0.0, 0.0])
        thigh = _limb_direction(side, angles["leg_abduction"][index], angles["leg_flexion"][index])
        shin = _bend(thigh, -forward, angles["knee"][index])
        points[f"{prefix}_shoulder"] = shoulder
        points[f"{prefix}_elbow"] = shoulder + upper_arm * 0.175
        points[f"{prefix}_wrist"] = points[f"{prefix}_elbow"] + forearm * 0.15
        points[f"{prefix}_hand"] = points[f"{prefix}_wrist"] + forearm * 0.045
        points[f"{prefix}_hip"] = hip
        points[f"{prefix}_knee"] = hip + thigh * 0.245
        points[f"{prefix}_ankle"] = points[f"{prefix}_knee"] + shin * 0.235
        points[f"{prefix}_toe"] = points[f"{prefix}_ankle"] + forward * 0.07 - up * 0.02 + side * leftward * 0.015
        points[f"{prefix}_eye"] = head + head_forward * 0.048 + side * head_left * 0.025 + up * 0.012
        points[f"{prefix}_ear"] = head + side * head_left * 0.06 - head_forward * 0.005
    points["hair_end"] = points["neck"] - head_forward * 0.03 - up * 0.06
    return points


def _sample_yaw(rng: np.random.Generator) -> float:
    """Front, three-quarter, side or back view (radians; 0 faces the camera, +90 deg faces image right)."""
    view = rng.choice(4, p=(0.35, 0.3, 0.2, 0.15))
    sign = rng.choice((-1.0, 1.0))
    degrees = (
        rng.normal(0, 12),
        sign * rng.uniform(25, 65),
        sign * rng.uniform(65, 100),
        180 + rng.normal(0, 15),
    )[view]
    return float(np.deg2rad(degrees))


def _project(points: dict[str, np.ndarray], yaw: float) -> dict[str, np.ndarray]:
    """Turn by ``yaw`` and project: body (u, v, w) -> view (x right, y down, z toward the camera)."""
    cos, sin = np.cos(yaw), np.sin(yaw)
    rotation = np.array([[cos, sin, 0.0], [0.0, 0.0, -1.0], [-sin, cos, 0.0]])
    return {name: rotation @ point for name, point in points.items()}


def _frame(
    view: dict[str, np.ndarray], rng: np.random.Generator, height: int, width: int
) -> tuple[dict[str, np.ndarray], float]:
    """Scale and place the figure in pixels: usually 78-94 % of the height, sometimes zoomed past the feet.

    Returns the points in pixels (directions such as ``head_forward`` unchanged) and the pixels per body unit.
    """
    top = view["head"][1] - _HEAD_RADIUS
    bottom = max(view[name][1] for name in ("right_ankle", "left_ankle", "right_toe", "left_toe")) + 0.025
    if rng.random() < 0.12:
        fill, margin = rng.uniform(1.15, 1.5), rng.uniform(0.0, 0.04)
    else:
        fill = rng.uniform(0.78, 0.94)
        margin = rng.uniform(0.01, 1.0 - fill - 0.01)
    scale = fill * height / (bottom - top)
    offset = np.array([width * rng.uniform(0.35, 0.65), margin * height - top * scale, 0.0])
    framed = {name: (point if name == "head_forward" else point * scale + offset) for name, point in view.items()}
    return framed, float(scale)


class _Painter:
    """Paints parts back to front on a float (H, W, 3) image with analytic anti-aliased coverage."""

    def __init__(self, background: np.ndarray, scale: float):
        self.image = background.copy()
        self.scale = scale  # pixels per body unit
        height, width = background.shape[:2]
        self.cols = np.arange(width, dtype=np.float64)[None, :]
        self.rows = np.arange(height, dtype=np.float64)[:, None]

    def blend(self, coverage: np.ndarray, colour: np.ndarray) -> None:
        self.image += coverage[..., None] * (colour - self.image)

    def capsule(
        self, start: np.ndarray, end: np.ndarray, radii: tuple[float, float], fill: Fabric | np.ndarray
    ) -> None:
        """A limb from ``start`` to ``end`` (view points, pixels) tapering between ``radii`` (body units)."""
        axis = end[:2] - start[:2]
        length = max(float(np.linalg.norm(axis)), 1e-6)
        along_dir = axis / length
        dx, dy = self.cols - start[0], self.rows - start[1]
        along = dx * along_dir[0] + dy * along_dir[1]
        across = dx * -along_dir[1] + dy * along_dir[0]
        clamped = np.clip(along, 0.0, length)
        distance = np.hypot(across, along - clamped)
        radius = (radii[0] + (radii[1] - radii[0]) * clamped / length) * self.scale
        coverage = np.clip(radius - distance + 0.5, 0.0, 1.0)
        shade = 0.62 + 0.38 * np.sqrt(np.clip(1.0 - (distance / radius) ** 2, 0.0, 1.0))
        colour = fill.paint(along / self.scale, across / self.scale) if isinstance(fill, Fabric) else fill
        self.blend(coverage, colour * shade[..., None])

    def torso(self, corners: np.ndarray, axis_start: np.ndarray, fabric: Fabric) -> None:
        """A convex quadrilateral ``corners`` (4, 2) (x, y); the fabric is laid out from ``axis_start`` up."""
        signed = []
        for i in range(4):
            edge = corners[i] - corners[i - 1]
            normal = np.array([-edge[1], edge[0]]) / np.linalg.norm(edge)
            signed.append((self.cols - corners[i - 1][0]) * normal[0] + (self.rows - corners[i - 1][1]) * normal[1])
        inside = np.minimum.reduce(signed)
        if inside.max() < 0:  # the corners were listed clockwise
            inside = np.minimum.reduce([-s for s in signed])
        coverage = np.clip(inside + 0.5, 0.0, 1.0)
        top_mid = (corners[0] + corners[1]) / 2
        up = (top_mid - axis_start) / np.linalg.norm(top_mid - axis_start)
        dx, dy = self.cols - axis_start[0], self.rows - axis_start[1]
        along, across = dx * up[0] + dy * up[1], dx * -up[1] + dy * up[0]
        half_width = np.linalg.norm(corners[0] - corners[1]) / 2
        shade = 0.7 + 0.3 * np.sqrt(np.clip(1.0 - (across / half_width) ** 2, 0.0, 1.0))
        self.blend(coverage, fabric.paint(along / self.scale, across / self.scale) * shade[..., None])

    def head(self, centre: np.ndarray, forward: np.ndarray, appearance: Appearance, eyes: list[np.ndarray]) -> None:
        """A shaded sphere: skin, hair where the surface faces up or backwards, eyes when facing us."""
        radius = _HEAD_RADIUS * self.scale
        dx, dy = (self.cols - centre[0]) / radius, (self.rows - centre[1]) / radius
        depth = np.sqrt(np.clip(1.0 - dx**2 - dy**2, 0.0, 1.0))
        coverage = np.clip(radius * (1.0 - np.hypot(dx, dy)) + 0.5, 0.0, 1.0)
        facing = dx * forward[0] + dy * forward[1] + depth * forward[2]
        rising = -dy  # the view's up direction; the head stays upright
        style_limits = {"short": (0.3, -0.35), "long": (0.3, -0.1), "buzz": (0.6, -0.6)}[appearance.hair_style]
        hair = (rising > style_limits[0]) | (facing < style_limits[1])
        colour = np.where(hair[..., None], appearance.hair, appearance.skin) * (0.65 + 0.35 * depth)[..., None]
        self.blend(coverage, colour)
        for eye in eyes:
            if eye[2] > centre[2]:  # only eyes on the camera's side of the head
                eye_radius = 0.13 * radius
                distance = np.hypot(self.cols - eye[0], self.rows - eye[1])
                self.blend(0.8 * np.clip(eye_radius - distance + 0.5, 0.0, 1.0), np.array([35.0, 25.0, 25.0]))


def _render(appearance: Appearance, points: dict[str, np.ndarray], scale: float, background: np.ndarray) -> np.ndarray:
    """Paint the person over ``background`` from framed view points (pixels); returns uint8 (H, W, 3)."""
    painter = _Painter(background, scale)
    # long hair hangs from just behind the head's centre
    points = points | {"hair_start": points["head"] - points["head_forward"] * 0.02 * scale}
    parts: list[tuple[float, Callable[[], None]]] = []  # (depth toward the camera, body units; painter)
    hip_axis = (points["right_hip"] + points["left_hip"]) / 2
    shoulder_axis = (points["right_shoulder"] + points["left_shoulder"]) / 2
    torso_depth = (hip_axis[2] + shoulder_axis[2]) / 2 / scale

    def add_capsule(start: str, end: str, radii: tuple[float, float], fill: Fabric | np.ndarray, depth: float) -> None:
        parts.append((depth, lambda: painter.capsule(points[start], points[end], radii, fill)))

    sleeve_or_skin = appearance.top if appearance.long_sleeves else appearance.skin
    shin_fill = appearance.skin if appearance.shorts else appearance.bottom
    limbs = (  # (from, to, radii, fill, depth bias): arms in front of the torso, legs tucked under it
        ("shoulder", "elbow", (0.036, 0.03), appearance.top, 0.01),
        ("elbow", "wrist", (0.029, 0.024), sleeve_or_skin, 0.011),
        ("wrist", "hand", (0.024, 0.02), appearance.skin, 0.012),
        ("hip", "knee", (0.05, 0.037), appearance.bottom, -0.08),
        ("knee", "ankle", (0.035, 0.027), shin_fill, -0.079),
        ("ankle", "toe", (0.028, 0.024), appearance.shoes, -0.078),
    )
    for side in ("right", "left"):
        for first, second, radii, fill, bias in limbs:
            start, end = f"{side}_{first}", f"{side}_{second}"
            add_capsule(start, end, radii, fill, (points[start][2] + points[end][2]) / 2 / scale + bias)
    add_capsule("neck", "head", (0.032, 0.032), appearance.skin, torso_depth - 0.001)  # under the collar
    if appearance.hair_style == "long":  # behind the torso when the face is toward the camera
        hair_depth = torso_depth + 0.001 - 0.05 * points["head_forward"][2]
        add_capsule("hair_start", "hair_end", (0.058, 0.045), appearance.hair, hair_depth)

    up = (shoulder_axis[:2] - hip_axis[:2]) / np.linalg.norm(shoulder_axis[:2] - hip_axis[:2])
    across = np.array([-up[1], up[0]])

    def half_width(right: str, left: str, lateral: float, depth: float) -> float:
        # the torso is a rounded box: its projected width blends its lateral width and its depth
        turn = (points[left][:2] - points[right][:2]) @ across / (2 * np.linalg.norm(points[left] - points[right]))
        return scale * np.hypot(lateral * turn, depth * np.sqrt(max(0.0, 1 - turn**2)))

    shoulder_half = half_width("right_shoulder", "left_shoulder", 0.15, 0.07)
    hip_half = half_width("right_hip", "left_hip", 0.115, 0.075)
    neck_level = points["neck"][:2] + up * 0.01 * scale
    corners = np.stack(
        [
            neck_level + across * shoulder_half,
            neck_level - across * shoulder_half,
            hip_axis[:2] - across * hip_half - up * 0.03 * scale,
            hip_axis[:2] + across * hip_half - up * 0.03 * scale,
        ]
    )
    parts.append((torso_depth, lambda: painter.torso(corners, hip_axis[:2], appearance.top)))
    eyes = [points["right_eye"], points["left_eye"]]
    parts.append((torso_depth + 1.0, lambda: painter.head(points["head"], points["head_forward"], appearance, eyes)))

    for _, paint in sorted(parts, key=lambda part: part[0]):
        paint()
    return np.clip(np.rint(painter.image), 0, 255).astype(np.uint8)


def _keypoints(points: dict[str, np.ndarray], height: int, width: int) -> np.ndarray:
    """The joints' pixel positions as (18, 2) int (row, col); -1 for joints outside the image."""
    keypoints = np.array([[round(points[name][1]), round(points[name][0])] for name in JOINT_NAMES], dtype=np.int64)
    outside = (keypoints[:, 0] < 0) | (keypoints[:, 0] >= height) | (keypoints[:, 1] < 0) | (keypoints[:, 1] >= width)
    keypoints[outside] = MISSING
    return keypoints


def render_identity(
    seed: int, identity: int, num_poses: int, height: int, width: int, background: str = "mixed"
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Draw ``num_poses`` images of identity ``identity``: [(image (H, W, 3) uint8, keypoints (18, 2))].

    Deterministic in (seed, identity): the same person and backdrop at any size and pose count.
    """
    rng = np.random.default_rng((seed, identity))
    appearance = Appearance.sample(rng, background)
    backdrop = appearance.backdrop.render(height, width)
    images = []
    for _ in range(num_poses):
        body = _sample_body(rng)
        points, scale = _frame(_project(body, _sample_yaw(rng)), rng, height, width)
        images.append((_render(appearance, points, scale, backdrop), _keypoints(points, height, width)))
    return images


def image_name(identity: int, pose: int) -> str:
    return f"id{identity:04d}_pose{pose:02d}.png"


def generate_synthetic_dataset(
    root: str | os.PathLike,
    height: int = DEFAULT_HEIGHT,
    width: int = DEFAULT_WIDTH,
    seed: int = 0,
    num_train_identities: int = DEFAULT_NUM_TRAIN_IDENTITIES,
    num_test_identities: int = DEFAULT_NUM_TEST_IDENTITIES,
    poses_per_identity: int = DEFAULT_POSES_PER_IDENTITY,
    background: str = "mixed",
    overwrite: bool = False,
    preset: str = "synthetic",
) -> None:
    """Write a synthetic dataset in the PATN layout under ``root`` (see the module docstring).

    ``preset`` picks the file names (``market``, ``deepfashion``): a stand-in dataset in a real dataset's
    format, to check a real-data configuration end to end before the real data is at hand.

    Everything is written into a hidden directory beside ``root`` and renamed into place at the end,
    so an interrupted run never leaves a half-made dataset. An existing ``root`` is an error unless
    ``overwrite`` is set, in which case it is replaced only once the new dataset is complete.
    """
    assert min(height, width) >= MIN_SIZE and seed >= 0, (height, width, seed)
    assert min(num_train_identities, num_test_identities) >= 1 and poses_per_identity >= 2
    assert background in BACKGROUND_CHOICES, background
    layout = make_layout(preset, height, width)
    root = Path(root)
    if root.is_file() or (root.is_dir() and any(root.iterdir()) and not overwrite):
        raise DataError(
            f"Synthetic data: '{root}' already exists and is not an empty directory; remove it, choose "
            "another root, or pass overwrite=True to replace a previous dataset."
        )
    splits = {
        "train": range(num_train_identities),
        "test": range(num_train_identities, num_train_identities + num_test_identities),
    }
    with (
        atomic_directory(root) as staging,
        tqdm(
            total=(num_train_identities + num_test_identities) * poses_per_identity,
            desc="synthetic dataset",
            unit="img",
        ) as progress,
    ):
        for split, identities in splits.items():
            layout.image_dir_path(staging, split).mkdir()
            annotations: dict[str, np.ndarray] = {}
            pairs: list[tuple[str, str]] = []
            for identity in identities:
                usable = []
                drawn = render_identity(seed, identity, poses_per_identity, height, width, background)
                for pose, (image, keypoints) in enumerate(drawn):
                    name = image_name(identity, pose)
                    # no per-file atomic write: the whole directory is renamed into place at the end
                    Image.fromarray(image).save(layout.image_dir_path(staging, split) / name, format="PNG")
                    annotations[name] = keypoints
                    if visible(keypoints)[list(REQUIRED_FOR_PAIRS)].all():
                        usable.append(name)
                    progress.update()
                pairs += [(source, target) for source in usable for target in usable if source != target]
            write_annotations(layout.annotation_path(staging, split), annotations)
            write_pairs(layout.pairs_path(staging, split), pairs)
