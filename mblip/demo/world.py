"""The demo world: scenes, scene graphs and a deterministic Pillow renderer.

A scene holds 1-3 objects. Each object has a shape (circle, square, triangle), a colour
(red, green, blue, yellow, purple), a size (small, large) and sits in one of three columns
(left, middle, right), at most one object per column, so that "left of" and "where is"
have one answer. No two objects of a scene share (colour, shape), so "the red circle" always
names one object. The vertical position is free (jittered) and carries no meaning.

Learnability drove the choices: 64 px images, three shapes that differ in outline
(round / four corners / three corners), five far-apart colours and two sizes whose
radii differ by a factor of ~1.7. A tiny ViT learns these in minutes on a CPU.

Splits never share a scene graph: every canonical graph (the discrete attributes, without
the jittered y) is owned by exactly one split, chosen by a stable hash of the graph
(`split_of`). `make_scenes` only keeps graphs its split owns, so train/val/test are
disjoint by construction, whatever the seeds and sizes, and each split is still a pure
function of (n, split, seed, max_objects).
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass

import numpy as np
from PIL import Image, ImageDraw

SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (215, 40, 40),
    "green": (40, 160, 60),
    "blue": (45, 85, 215),
    "yellow": (235, 195, 30),
    "purple": (145, 60, 175),
}
# Radius as a fraction of the image side. Three columns are 1/3 wide each, so a large
# object (diameter 0.32) still leaves a gap to its neighbour.
SIZES: dict[str, float] = {"small": 0.095, "large": 0.16}
POSITIONS: tuple[str, ...] = ("left", "middle", "right")  # column order, left to right

# Share of all possible scene graphs owned by each split (see module docstring).
SPLIT_SHARES: dict[str, float] = {"train": 0.7, "val": 0.1, "test": 0.2}

BACKGROUND = (236, 234, 228)
_Y_RANGE = (0.22, 0.78)  # vertical centre, as a fraction; keeps large objects inside
_SUPERSAMPLE = 4  # draw at 4x and downsample: anti-aliased edges at 64 px


def stable_hash(text: str) -> int:
    """A 64-bit hash that is the same in every process (unlike Python's salted `hash()`)."""
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "big")


@dataclass(frozen=True)
class Obj:
    """One object of a scene; `y` is the vertical centre as a fraction of the image height."""

    shape: str
    colour: str
    size: str
    position: str
    y: float = 0.5

    def __post_init__(self):
        for field, value, allowed in (
            ("shape", self.shape, SHAPES),
            ("colour", self.colour, tuple(COLOURS)),
            ("size", self.size, tuple(SIZES)),
            ("position", self.position, POSITIONS),
        ):
            if value not in allowed:
                raise ValueError(f"Obj.{field} must be one of {list(allowed)}, got {value!r}")
        if not 0.0 <= self.y <= 1.0:
            raise ValueError(f"Obj.y is a fraction of the image height in [0, 1], got {self.y}")

    @property
    def column(self) -> int:
        return POSITIONS.index(self.position)

    def key(self) -> tuple[str, str, str, str]:
        """The discrete attributes: what a scene graph says about this object."""
        return (self.position, self.colour, self.shape, self.size)


@dataclass(frozen=True)
class Scene:
    """A scene graph: an id, the split it belongs to and its objects, left to right."""

    id: str
    split: str
    objects: tuple[Obj, ...]

    def __post_init__(self):
        if not 1 <= len(self.objects) <= len(POSITIONS):
            raise ValueError(f"scene {self.id}: needs 1-{len(POSITIONS)} objects, got {len(self.objects)}")
        columns = [o.position for o in self.objects]
        if len(set(columns)) != len(columns):
            raise ValueError(f"scene {self.id}: at most one object per column, got {columns}")
        pairs = [(o.colour, o.shape) for o in self.objects]
        if len(set(pairs)) != len(pairs):
            raise ValueError(f"scene {self.id}: two objects share (colour, shape): {pairs}")
        # Keep objects in column order so every consumer can rely on left-to-right.
        ordered = tuple(sorted(self.objects, key=lambda o: o.column))
        object.__setattr__(self, "objects", ordered)

    def key(self) -> tuple:
        """Canonical scene graph: what must never appear in two splits."""
        return tuple(o.key() for o in self.objects)

    def at(self, position: str) -> Obj | None:
        return next((o for o in self.objects if o.position == position), None)

    def to_dict(self) -> dict:
        return {"id": self.id, "split": self.split, "objects": [asdict(o) for o in self.objects]}

    @classmethod
    def from_dict(cls, d: dict) -> "Scene":
        return cls(id=d["id"], split=d["split"], objects=tuple(Obj(**o) for o in d["objects"]))


def split_of(key: tuple) -> str:
    """The split that owns a canonical scene graph (stable across processes and runs)."""
    u = (stable_hash(repr(key)) % 1_000_000) / 1_000_000
    edge = 0.0
    for split, share in SPLIT_SHARES.items():
        edge += share
        if u < edge:
            return split
    return split  # u rounds into the last bucket


def make_scenes(n: int, split: str, seed: int, max_objects: int = 3) -> list[Scene]:
    """`n` random scenes for `split`, a pure function of (n, split, seed, max_objects).

    Each split draws from its own RNG stream and keeps only the scene graphs it owns
    (`split_of`), so scenes of different splits never coincide.
    """
    if split not in SPLIT_SHARES:
        raise ValueError(f"unknown split {split!r}; use one of {list(SPLIT_SHARES)}")
    if not 1 <= max_objects <= len(POSITIONS):
        raise ValueError(f"max_objects must be in 1..{len(POSITIONS)} (one object per column), got {max_objects}")
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    rng = np.random.default_rng([seed, stable_hash("split:" + split)])
    kinds = [(c, s) for c in COLOURS for s in SHAPES]
    scenes: list[Scene] = []
    attempts = 0
    while len(scenes) < n:
        attempts += 1
        if attempts > 100 * n + 1000:  # only reachable with a broken SPLIT_SHARES table
            raise RuntimeError(f"could not draw {n} scenes for split {split!r}; check SPLIT_SHARES")
        k = int(rng.integers(1, max_objects + 1))
        columns = sorted(rng.choice(len(POSITIONS), size=k, replace=False).tolist())
        picks = rng.choice(len(kinds), size=k, replace=False).tolist()
        objects = tuple(
            Obj(
                shape=kinds[p][1],
                colour=kinds[p][0],
                size=tuple(SIZES)[int(rng.integers(len(SIZES)))],
                position=POSITIONS[col],
                y=round(float(rng.uniform(*_Y_RANGE)), 3),
            )
            for col, p in zip(columns, picks)
        )
        scene = Scene(id=f"{split}-{len(scenes):06d}", split=split, objects=objects)
        if split_of(scene.key()) == split:
            scenes.append(scene)
    return scenes


def object_centre(obj: Obj, size: int) -> tuple[float, float]:
    """Nominal pixel centre of an object (before render jitter, which is < 2% of the side)."""
    return ((obj.column + 0.5) / len(POSITIONS) * size, obj.y * size)


def render(scene: Scene, size: int = 64, seed: int = 0) -> Image.Image:
    """Draw a scene as an RGB image: light noisy background, flat-coloured shapes.

    Deterministic in (scene, size, seed); the jitter (position, radius, colour) and the
    noise come from a generator seeded with `seed` and a stable hash of the scene id.
    """
    if size < 16:
        raise ValueError(f"image size must be >= 16 px to draw three columns of shapes, got {size}")
    rng = np.random.default_rng([seed, stable_hash("render:" + scene.id)])
    big = size * _SUPERSAMPLE
    tint = rng.integers(-6, 7, size=3)
    background = tuple(int(c + t) for c, t in zip(BACKGROUND, tint))
    img = Image.new("RGB", (big, big), background)
    draw = ImageDraw.Draw(img)
    for obj in scene.objects:
        cx, cy = object_centre(obj, big)
        cx += rng.uniform(-0.015, 0.015) * big
        r = SIZES[obj.size] * big * rng.uniform(0.93, 1.07)
        rgb = tuple(int(np.clip(c + rng.integers(-10, 11), 0, 255)) for c in COLOURS[obj.colour])
        if obj.shape == "circle":
            draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=rgb)
        elif obj.shape == "square":
            h = 0.86 * r  # area close to the circle's, so size reads the same for every shape
            draw.rectangle([cx - h, cy - h, cx + h, cy + h], fill=rgb)
        else:  # triangle: equilateral, pointing up, centroid at (cx, cy)
            R = 1.15 * r
            pts = [(cx + R * np.cos(a), cy - R * np.sin(a)) for a in np.deg2rad([90.0, 210.0, 330.0])]
            draw.polygon(pts, fill=rgb)
    img = img.resize((size, size), Image.Resampling.BOX)  # area average: no ringing halo
    pixels = np.asarray(img, dtype=np.float32) + rng.normal(0.0, 4.0, size=(size, size, 3))
    return Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8), "RGB")
