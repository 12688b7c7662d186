"""Seeded synthetic MOTSynth: JPEG frames and COCO-style annotations from a pinhole camera.

Each sequence has a camera 1.2-1.8 m high, pitched down 2-8 degrees, above a textured ground
plane, one low wall (0.6-1.1 m high, 2-5 m long, 5-20 m away) and ``pedestrians`` people in
view (a slot whose person leaves the view is refilled). Box size and shape, the feet's row in
the frame and the ground texture carry distance, so a model that learns beats the mean.

As on real MOTSynth, a box is often not a whole upright adult, so f * 1.75 m / box height
(the pinhole reference) errs where a model that sees more does not: DisNet sees the box's
aspect ratio, Zhu & Fang the frame around it. Each new person independently draws
(fractions of people spawned, the ``DemoSettings`` defaults):

- body: a child 1.0-1.45 m tall (``children`` 0.1), else an adult 1.75 +- 0.07 m; pose:
  sitting (box 0.74 of stature) or crouching (0.58), seen side-on so the box is also
  relatively wider (``seated`` 0.1, half each; they stay put), else standing and walking,
  body width x 0.7-1.2 (orientation, arms, clothes) so box width alone is a poor ruler;
- place: 0.4-3.5 m behind the wall, which hides the legs (``behind_occluder`` 0.08); beside
  another person, moving with them (``crowd`` 0.2); straddling the left or right frame
  border, or 1.5-3.5 m away where the frame cuts the legs (``border`` 0.1); else anywhere in
  view at 3-80 m, skewed towards the near range like MOTSynth (mean ~30 m).

A detector's view is annotated: ``bbox`` is the box of the visible part (the modal box:
clipped to the frame, less what nearer people and walls hide), and hidden joints (behind
something nearer, or outside the frame) get flag 1 in ``keypoints`` and ``keypoints_3d``,
visible ones 2. A person is annotated while any of it is visible, so some fall below the
index's visibility threshold (0.18). In the demo config's dataset (config/config.yaml, seed
0: 1389 annotations) 12% of the annotations are children, 11% seated or crouching, 9% cut by
the frame border, 15% have joints hidden by the wall, 16% by a nearer person, 35% have
someone within 1.5 m, and 3% have visibility below 0.18; tests/distance/
test_demo_and_index.py measures these from the JSON.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw
from tqdm import tqdm

from workflow.common.atomic import write_bytes, write_json
from workflow.common.config import schema_dataclass
from workflow.distance.scene import (
    Camera,
    Occluder,
    Person,
    Shape,
    joint_flags,
    visible_box,
)

PRIOR_HEIGHT = 1.75
MIN_BOX_PX = 2.0  # a visible sliver thinner than this is not annotated


CAMERA_PITCH_DEG = (2.0, 8.0)  # range of the camera's downward pitch, drawn per sequence
PERSON_HEIGHT_SD = 0.07  # m, adults' stature around PRIOR_HEIGHT


def _check_fractions(self) -> None:
    if self.behind_occluder + self.crowd + self.border > 1:
        raise ValueError("behind_occluder + crowd + border must be at most 1")


#: write_demo's settings: config/schema/distance.yaml $defs/distance_demo, their one source.
DemoSettings = schema_dataclass(
    "DemoSettings", "distance_demo", __name__, __post_init__=_check_fractions
)


def _render_background(cam: Camera, rng_texture: float) -> np.ndarray:
    """Sky above the horizon, a checkered ground plane with distance fog below it."""
    v, u = np.mgrid[0 : cam.height, 0 : cam.width].astype(np.float64)
    rays = np.stack([(u - cam.cx) / cam.f, (v - cam.cy) / cam.f, np.ones_like(u)], axis=-1)
    s, c = math.sin(cam.pitch), math.cos(cam.pitch)
    # camera frame -> level frame (inverse of Camera.to_camera)
    lx, ly, lz = (
        rays[..., 0],
        c * rays[..., 1] + s * rays[..., 2],
        -s * rays[..., 1] + c * rays[..., 2],
    )
    img = np.empty((cam.height, cam.width, 3))
    sky = ly <= 1e-6
    t = np.where(sky, 0.0, cam.height_m / np.maximum(ly, 1e-6))
    gx, gz = lx * t, lz * t
    checker = (np.floor(gx / 2.0 + rng_texture) + np.floor(gz / 2.0)) % 2
    ground = np.where(checker[..., None] > 0, [118, 112, 100], [88, 84, 76]).astype(np.float64)
    fog = np.clip(gz / 120.0, 0, 1)[..., None]
    ground = ground * (1 - fog) + np.array([170, 175, 180]) * fog
    sky_color = np.array([150, 185, 225]) + (v / cam.height)[..., None] * 40
    img[:] = np.where(sky[..., None], sky_color, ground)
    return img.clip(0, 255).astype(np.uint8)


def _colour(rng: np.random.Generator, lo: int, hi: int) -> tuple[int, int, int]:
    return tuple(int(c) for c in rng.integers(lo, hi, 3))


def _wall(rng: np.random.Generator, cam: Camera) -> Occluder:
    """A low wall, 0.6-1.1 m high and 2-5 m long, 5-20 m from the camera."""
    z = float(rng.uniform(5.0, 20.0))
    length = float(rng.uniform(2.0, 5.0))
    centre = z * math.tan(rng.uniform(-0.7, 0.7) * cam.half_fov)
    height = float(rng.uniform(0.6, 1.1))
    return Occluder(centre - length / 2, centre + length / 2, z, height, (150, 140, 128))


def _body(rng: np.random.Generator, s: DemoSettings) -> tuple[float, str, float]:
    """Stature, pose and lateral spread of a new person."""
    if rng.uniform() < s.children:
        stature = float(rng.uniform(1.0, 1.45))
    else:
        stature = float(np.clip(rng.normal(PRIOR_HEIGHT, PERSON_HEIGHT_SD), 1.5, 2.0))
    if rng.uniform() < s.seated:
        return stature, str(rng.choice(["sit", "crouch"])), float(rng.uniform(0.85, 1.15))
    return stature, "stand", float(rng.uniform(0.7, 1.2))


def _far_distance(rng: np.random.Generator, s: DemoSettings) -> float:
    """Skewed towards the near range like MOTSynth (mean ~30 m on 3-80 m)."""
    lo, hi = max(3.0, s.distance_range[0]), s.distance_range[1]
    return lo + (hi - lo) * float(rng.uniform()) ** 1.6


def _place(
    rng: np.random.Generator,
    cam: Camera,
    s: DemoSettings,
    people: list[Person],
    occluders: list[Occluder],
    stature: float,
) -> tuple[float, float, tuple[float, float] | None]:
    """Ground position (x, z) and, for a crowd member, the velocity it shares."""
    r = rng.uniform()
    if r < s.behind_occluder and occluders:
        occ = occluders[int(rng.integers(len(occluders)))]
        x = float(rng.uniform(occ.x1 + 0.3, occ.x2 - 0.3))
        return x, occ.z + float(rng.uniform(0.4, 3.5)), (float(rng.uniform(-0.15, 0.15)), 0.0)
    r -= s.behind_occluder
    if r < s.crowd and people:
        anchor = people[int(rng.integers(len(people)))]
        dx = float(rng.choice([-1.0, 1.0]) * rng.uniform(0.5, 1.3))
        return anchor.x + dx, anchor.z + float(rng.uniform(-1.2, 1.2)), (anchor.vx, anchor.vz)
    r -= s.crowd
    if r < s.border:
        if rng.uniform() < 0.25:  # so close that the frame cuts the legs
            dist = float(rng.uniform(s.distance_range[0], 3.5))
            angle = rng.uniform(-0.5, 0.5) * cam.half_fov
            return dist * math.sin(angle), dist * math.cos(angle), None
        z = _far_distance(rng, s)
        half_box = 0.2 * cam.f * stature / z  # about half a standing person's box width
        u = float(rng.choice([0.0, cam.width]) + rng.uniform(-1.0, 1.0) * half_box)
        return (u - cam.cx) * z / cam.f, z, None
    dist = _far_distance(rng, s)
    angle = rng.uniform(-0.85, 0.85) * cam.half_fov
    return dist * math.sin(angle), dist * math.cos(angle), None


def _spawn(
    rng: np.random.Generator,
    ped_id: int,
    cam: Camera,
    s: DemoSettings,
    people: list[Person],
    occluders: list[Occluder],
) -> Person:
    stature, pose, spread = _body(rng, s)
    x, z, shared = _place(rng, cam, s, people, occluders, stature)
    speed = rng.uniform(0.0, 1.5) / 5  # metres per frame at 5 fps
    heading = rng.uniform(0, 2 * math.pi)
    walk = (speed * math.cos(heading), speed * math.sin(heading))
    vx, vz = shared if shared is not None else walk
    if pose != "stand":
        vx = vz = 0.0
    return Person(
        ped_id=ped_id,
        x=x,
        z=z,
        vx=vx,
        vz=vz,
        stature=stature,
        pose=pose,
        spread=spread,
        facing=int(rng.choice([-1, 1])),
        shirt=_colour(rng, 20, 235),
        trousers=_colour(rng, 10, 120),
    )


@dataclass
class _Seen:
    """A person placed in one frame: camera-frame joints, projections and body parts."""

    person: Person
    joints: np.ndarray
    uv: np.ndarray
    shapes: list[Shape]

    @property
    def depth(self) -> float:
        return float(self.joints[:, 2].mean())


def _in_view(person: Person, cam: Camera, s: DemoSettings) -> _Seen | None:
    """The person's placement in the frame, or None when out of range or out of the frame."""
    joints = cam.to_camera(person.joints_level(cam))
    if joints[:, 2].min() <= 0.5:
        return None
    dist = float(np.linalg.norm(joints[[18, 21]].mean(axis=0)))
    if not s.distance_range[0] <= dist <= s.distance_range[1]:
        return None
    uv = cam.project(joints)
    shapes = person.shapes(joints, uv, cam)
    rects = np.array([rect for rect, _, _ in shapes])
    cut = np.clip(rects, [0, 0, 0, 0], [cam.width, cam.height, cam.width, cam.height])
    if (cut[:, 2] - cut[:, 0]).max() < MIN_BOX_PX or (cut[:, 3] - cut[:, 1]).max() < MIN_BOX_PX:
        return None
    return _Seen(person, joints, uv, shapes)


def _draw(draw: ImageDraw.ImageDraw, shapes: list[Shape]) -> None:
    for rect, colour, ellipse in shapes:
        (draw.ellipse if ellipse else draw.rectangle)([float(v) for v in rect], fill=colour)


def _annotation(
    seen: _Seen, covers: np.ndarray, cam: Camera, ann_id: int, image_id: int
) -> dict[str, Any] | None:
    """MOTSynth's annotation of one person: the visible part's box and per-joint flags."""
    own = np.array([rect for rect, _, _ in seen.shapes])
    box = visible_box(own, covers, cam.width, cam.height)
    if box is None or box[2] - box[0] < MIN_BOX_PX / 2 or box[3] - box[1] < MIN_BOX_PX:
        return None
    vis = joint_flags(seen.uv, covers, cam.width, cam.height)
    x1, y1, x2, y2 = (float(v) for v in box)
    return {
        "id": ann_id,
        "image_id": image_id,
        "category_id": 1,
        "bbox": [round(x1, 2), round(y1, 2), round(x2 - x1, 2), round(y2 - y1, 2)],
        "area": round((x2 - x1) * (y2 - y1), 2),
        "iscrowd": 0,
        "keypoints": [round(float(v), 3) for row in np.column_stack([seen.uv, vis]) for v in row],
        "num_keypoints": int((vis > 0).sum()),
        "keypoints_3d": [
            round(float(v), 4) for row in np.column_stack([seen.joints, vis]) for v in row
        ],
        "ped_id": seen.person.ped_id,
        "model_id": int(seen.person.ped_id % 7),
    }


def _encode_jpeg(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def write_sequence(root: Path, index: int, s: DemoSettings) -> dict[str, Any]:
    """Render one sequence; write its frames and ``annotations/<seq>.json``."""
    rng = np.random.default_rng([s.seed, index])
    seq = f"{index:03d}"
    f = s.width / 2 / math.tan(math.radians(s.fov_deg) / 2)
    cam = Camera(
        s.width,
        s.height,
        f,
        float(rng.uniform(*s.camera_height)),
        math.radians(rng.uniform(*CAMERA_PITCH_DEG)),
    )
    background = _render_background(cam, float(rng.uniform(0, 1)))
    occluders = [_wall(rng, cam)]
    static = [(occ.depth(cam), occ.shapes(cam)) for occ in occluders]
    n_people = int(rng.integers(s.pedestrians[0], s.pedestrians[1] + 1))
    people: list[Person] = []
    for i in range(n_people):
        people.append(_spawn(rng, i, cam, s, people, occluders))
    next_id = n_people
    images, annotations = [], []
    for frame_n in range(s.frames_per_sequence):
        placed: list[_Seen] = []
        for k, person in enumerate(people):
            seen = _in_view(person, cam, s)
            if seen is None:  # left the view: a new pedestrian takes the slot
                others = people[:k] + people[k + 1 :]
                people[k] = person = _spawn(rng, next_id, cam, s, others, occluders)
                next_id += 1
                seen = _in_view(person, cam, s)
            if seen is not None:
                placed.append(seen)
        # far to near: painter's order; each object is hidden by everything nearer
        layers = sorted(
            [(p.depth, p.shapes, p) for p in placed] + [(d, sh, None) for d, sh in static],
            key=lambda layer: -layer[0],
        )
        img = Image.fromarray(background.copy())
        draw = ImageDraw.Draw(img)
        for _, shapes, _ in layers:
            _draw(draw, shapes)
        image_id = index * 100_000 + frame_n
        file_name = f"frames/{seq}/rgb/{frame_n:04d}.jpg"
        write_bytes(root / file_name, _encode_jpeg(img))
        images.append(
            {
                "id": image_id,
                "file_name": file_name,
                "height": s.height,
                "width": s.width,
                "frame_n": frame_n,
                "cam_world_pos": [0.0, -cam.height_m, 0.0],
                "cam_world_rot": [math.degrees(cam.pitch), 0.0, 0.0],
            }
        )
        for j, (_, _, seen) in enumerate(layers):
            if seen is None:
                continue
            nearer = [rect for _, shapes, _ in layers[j + 1 :] for rect, _, _ in shapes]
            covers = np.array(nearer).reshape(-1, 4)
            ann = _annotation(
                seen, covers, cam, len(annotations) + index * 10_000_000 + 1, image_id
            )
            if ann is not None:
                annotations.append(ann)
        for person in people:
            person.x += person.vx
            person.z += person.vz
    info = {
        "seq_name": seq,
        "is_night": False,
        "weather": "CLEAR",
        "is_moving": False,
        "cam_fov": s.fov_deg,
        "fx": f,
        "fy": f,
        "cx": cam.cx,
        "cy": cam.cy,
        "cam_height_m": cam.height_m,
        "cam_pitch_deg": math.degrees(cam.pitch),
    }
    write_json(
        root / "annotations" / f"{seq}.json",
        {
            "info": info,
            "images": images,
            "annotations": annotations,
            "categories": [{"id": 1, "name": "person", "supercategory": "person"}],
        },
    )
    return {"sequence": seq, "frames": len(images), "objects": len(annotations)}


def write_demo(root: str | Path, settings: DemoSettings) -> dict[str, Any]:
    """Write the whole demo dataset; the manifest is written last and marks completion."""
    root = Path(root)
    seqs = [
        write_sequence(root, i, settings)
        for i in tqdm(range(settings.sequences), desc="demo sequences", mininterval=1)
    ]
    manifest = {
        "dataset": "MOTSynth-style synthetic demo",
        "seed": settings.seed,
        "sequences": seqs,
        "frames": sum(s["frames"] for s in seqs),
        "objects": sum(s["objects"] for s in seqs),
    }
    write_json(root / "manifest.json", manifest)
    return manifest
