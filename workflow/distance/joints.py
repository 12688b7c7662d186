"""MOTSynth's 22 body joints (the JTA skeleton) and the distance definitions built on them.

The annotations' ``keypoints`` / ``keypoints_3d`` list the joints in the order of
:data:`JOINTS`. Joint 0 is the head: the top of the skull in JTA's naming, and the joint that
MOTSynth-based distance work measures the head from. Joint 1 (head centre) lies about 0.1 m
below it, so the two give head distances that differ by up to that much.
"""

from __future__ import annotations

import numpy as np

JOINTS = (
    "head_top",
    "head_center",
    "neck",
    "right_clavicle",
    "right_shoulder",
    "right_elbow",
    "right_wrist",
    "left_clavicle",
    "left_shoulder",
    "left_elbow",
    "left_wrist",
    "spine0",
    "spine1",
    "spine2",
    "spine3",
    "spine4",
    "right_hip",
    "right_knee",
    "right_ankle",
    "left_hip",
    "left_knee",
    "left_ankle",
)
N_JOINTS = len(JOINTS)
HEAD = 0  # "head_top": MOTSynth's head joint
FEET = (JOINTS.index("right_ankle"), JOINTS.index("left_ankle"))

# Joint heights as a fraction of body height, and lateral offsets as a fraction of body
# width (+ = the person's left, seen from the camera on the image's right).
HEIGHT_FRACTION = np.array(
    [
        1.00,
        0.94,
        0.87,
        0.85,
        0.82,
        0.66,
        0.50,
        0.85,
        0.82,
        0.66,
        0.50,
        0.55,
        0.60,
        0.66,
        0.72,
        0.78,
        0.52,
        0.28,
        0.04,
        0.52,
        0.28,
        0.04,
    ]
)
LATERAL_FRACTION = np.array(
    [
        0.0,
        0.0,
        0.0,
        -0.2,
        -0.45,
        -0.5,
        -0.5,
        0.2,
        0.45,
        0.5,
        0.5,
        0.0,
        0.0,
        0.0,
        0.0,
        0.0,
        -0.2,
        -0.2,
        -0.2,
        0.2,
        0.2,
        0.2,
    ]
)

DISTANCE_DEFINITIONS = ("feet", "head", "depth")


def distance_from_keypoints(kp3d: np.ndarray, definition: str) -> float:
    """Distance of one person from the camera, from its (22, 3+) camera-frame joints in metres.

    ``feet``: Euclidean norm of the ankles' midpoint (joints 18 and 21); ``head``: of the head
    joint (joint 0); ``depth``: Z of the ankles' midpoint.
    """
    if definition == "feet":
        return float(np.linalg.norm(kp3d[list(FEET), :3].mean(axis=0)))
    if definition == "head":
        return float(np.linalg.norm(kp3d[HEAD, :3]))
    if definition == "depth":
        return float(kp3d[list(FEET), 2].mean())
    raise ValueError(
        f"unknown distance definition {definition!r}: use one of {', '.join(DISTANCE_DEFINITIONS)}"
    )
