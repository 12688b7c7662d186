"""Seeded synthetic MOTSynth: JPEG frames and COCO-style annotations from a pinhole camera.

Each sequence has a camera at a known height and downward pitch above a textured ground
plane; pedestrians of varied height walk on the plane at 3-80 m. Box size, the feet's row in
the frame and the ground texture all carry distance, so a model that learns beats the mean.
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
from workflow.distance.joints import HEIGHT_FRACTION, LATERAL_FRACTION, N_JOINTS

PRIOR_HEIGHT, PRIOR_WIDTH = 1.75, 0.55


@dataclass(frozen=True)
class DemoSettings:
    sequences: int = 10
    frames_per_sequence: int = 20
    width: int = 640
    height: int = 360
    fov_deg: float = 70.0
    pedestrians: tuple[int, int] = (4, 8)
    distance_range: tuple[float, float] = (3.0, 80.0)
    camera_height: tuple[float, float] = (1.0, 1.8)
    camera_pitch_deg: tuple[float, float] = (2.0, 8.0)
    person_height_sd: float = 0.07
    seed: int = 0


@dataclass(frozen=True)
class Camera:
    width: int
    height: int
    f: float
    height_m: float
    pitch: float  # radians, downwards

    @property
    def cx(self) -> float:
        return self.width / 2

    @property
    def cy(self) -> float:
        return self.height / 2

    def to_camera(self, level: np.ndarray) -> np.ndarray:
        """Level frame (X right, Y down, Z forward; camera at origin) -> pitched camera frame."""
        s, c = math.sin(self.pitch), math.cos(self.pitch)
        x, y, z = level[..., 0], level[..., 1], level[..., 2]
        return np.stack([x, c * y - s * z, s * y + c * z], axis=-1)

    def project(self, cam: np.ndarray) -> np.ndarray:
        return np.stack(
            [
                self.f * cam[..., 0] / cam[..., 2] + self.cx,
                self.f * cam[..., 1] / cam[..., 2] + self.cy,
            ],
            axis=-1,
        )


@dataclass
class Person:
    ped_id: int
    x: float  # level-frame ground position (metres)
    z: float
    vx: float
    vz: float
    height: float
    width: float
    shirt: tuple[int, int, int]
    trousers: tuple[int, int, int]

    def joints_level(self, cam: Camera) -> np.ndarray:
        y = cam.height_m - HEIGHT_FRACTION * self.height
        x = self.x + LATERAL_FRACTION * self.width
        return np.stack([x, y, np.full(N_JOINTS, self.z)], axis=-1)


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


def _draw_person(draw: ImageDraw.ImageDraw, box: np.ndarray, person: Person) -> None:
    x1, y1, x2, y2 = box
    h, w = y2 - y1, x2 - x1
    head = 0.13 * h
    cxm = (x1 + x2) / 2
    draw.ellipse([cxm - head / 2, y1, cxm + head / 2, y1 + head], fill=(224, 180, 150))
    draw.rectangle([x1 + 0.1 * w, y1 + head, x2 - 0.1 * w, y1 + 0.5 * h], fill=person.shirt)
    draw.rectangle([x1 + 0.2 * w, y1 + 0.5 * h, x2 - 0.2 * w, y2], fill=person.trousers)


def _spawn(rng: np.random.Generator, ped_id: int, cam: Camera, s: DemoSettings) -> Person:
    # Skewed towards the near range like MOTSynth (mean ~30 m on 3-80 m).
    lo, hi = s.distance_range
    dist = lo + (hi - lo) * float(rng.uniform()) ** 1.6
    half_fov = math.atan(cam.width / 2 / cam.f)
    angle = rng.uniform(-0.85, 0.85) * half_fov
    height = float(np.clip(rng.normal(PRIOR_HEIGHT, s.person_height_sd), 1.5, 2.0))
    speed = rng.uniform(0.0, 1.5) / 5  # metres per frame at 5 fps
    heading = rng.uniform(0, 2 * math.pi)
    return Person(
        ped_id=ped_id,
        x=dist * math.sin(angle),
        z=dist * math.cos(angle),
        vx=speed * math.cos(heading),
        vz=speed * math.sin(heading),
        height=height,
        width=PRIOR_WIDTH * height / PRIOR_HEIGHT,
        shirt=tuple(int(c) for c in rng.integers(20, 235, 3)),
        trousers=tuple(int(c) for c in rng.integers(10, 120, 3)),
    )


def _visible_box(
    person: Person, cam: Camera, s: DemoSettings
) -> tuple[np.ndarray, np.ndarray] | None:
    """Camera-frame joints and the full-body box, or None if not fully inside the frame."""
    joints = cam.to_camera(person.joints_level(cam))
    if joints[:, 2].min() <= 0.5:
        return None
    dist = float(np.linalg.norm(joints[[18, 21]].mean(axis=0)))
    if not s.distance_range[0] <= dist <= s.distance_range[1]:
        return None
    uv = cam.project(joints)
    half_w = cam.f * person.width / 2 / joints[:, 2].mean()
    x1, x2 = uv[:, 0].min() - half_w * 0.3, uv[:, 0].max() + half_w * 0.3
    y1, y2 = uv[:, 1].min(), uv[:, 1].max()
    box = np.array([x1, y1, x2, y2])
    if x1 < 0 or y1 < 0 or x2 > cam.width - 1 or y2 > cam.height - 1:
        return None
    return joints, box


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
        math.radians(rng.uniform(*s.camera_pitch_deg)),
    )
    background = _render_background(cam, float(rng.uniform(0, 1)))
    n_people = int(rng.integers(s.pedestrians[0], s.pedestrians[1] + 1))
    people = [_spawn(rng, i, cam, s) for i in range(n_people)]
    next_id = n_people
    images, annotations = [], []
    for frame_n in range(s.frames_per_sequence):
        placed = []
        for k, person in enumerate(people):
            found = _visible_box(person, cam, s)
            if found is None:  # walked out of view: a new pedestrian takes the slot
                people[k] = person = _spawn(rng, next_id, cam, s)
                next_id += 1
                found = _visible_box(person, cam, s)
            if found is not None:
                placed.append((person, *found))
        placed.sort(key=lambda p: -p[1][:, 2].mean())  # far to near: painter's order
        img = Image.fromarray(background.copy())
        draw = ImageDraw.Draw(img)
        for person, _, box in placed:
            _draw_person(draw, box, person)
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
        for j, (person, joints, box) in enumerate(placed):
            uv = cam.project(joints)
            nearer = [b for _, _, b in placed[j + 1 :]]
            vis = np.full(N_JOINTS, 2)
            for b in nearer:
                covered = (
                    (uv[:, 0] >= b[0])
                    & (uv[:, 0] <= b[2])
                    & (uv[:, 1] >= b[1])
                    & (uv[:, 1] <= b[3])
                )
                vis[covered] = 1
            x1, y1, x2, y2 = (float(v) for v in box)
            annotations.append(
                {
                    "id": len(annotations) + index * 10_000_000 + 1,
                    "image_id": image_id,
                    "category_id": 1,
                    "bbox": [round(x1, 2), round(y1, 2), round(x2 - x1, 2), round(y2 - y1, 2)],
                    "area": round((x2 - x1) * (y2 - y1), 2),
                    "iscrowd": 0,
                    "keypoints": [
                        round(float(v), 3) for row in np.column_stack([uv, vis]) for v in row
                    ],
                    "num_keypoints": int((vis > 0).sum()),
                    "keypoints_3d": [
                        round(float(v), 4) for row in np.column_stack([joints, vis]) for v in row
                    ],
                    "ped_id": person.ped_id,
                    "model_id": int(person.ped_id % 7),
                }
            )
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
