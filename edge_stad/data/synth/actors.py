"""Stick-figure actors: a 2-D skeleton, its forward kinematics, and how it is drawn.

A pose is a float64 vector indexed by the constants below. Lengths are in units of the
actor's standing height ``h`` (pixels at draw time). Upper-segment angles are absolute
(0 = pointing straight down, +pi/2 = pointing to image right), lower-segment angles are
relative to their upper segment, ``lean`` tilts the torso top towards +x. With this
convention a horizontal mirror is "negate x, lean and every angle, swap left and right"
(:func:`mirror`), which is what makes mirror-symmetric classes testable.

The feet are grounded automatically: the lowest foot touches the ground line unless
``lift`` (in heights) raises the whole body, so a pose never needs a hand-tuned pelvis
height and jumping is just ``lift > 0``.
"""
from typing import NamedTuple, Tuple

import cv2
import numpy as np

POSE_FIELDS = ("x", "lift", "lean", "l_shoulder", "l_elbow", "r_shoulder", "r_elbow",
               "l_hip", "l_knee", "r_hip", "r_knee")
X, LIFT, LEAN, L_SHOULDER, L_ELBOW, R_SHOULDER, R_ELBOW, L_HIP, L_KNEE, R_HIP, R_KNEE = range(len(POSE_FIELDS))
POSE_SIZE = len(POSE_FIELDS)
_ANGLES = [LEAN, L_SHOULDER, L_ELBOW, R_SHOULDER, R_ELBOW, L_HIP, L_KNEE, R_HIP, R_KNEE]
_SWAP = [(L_SHOULDER, R_SHOULDER), (L_ELBOW, R_ELBOW), (L_HIP, R_HIP), (L_KNEE, R_KNEE)]

# Standing, arms slightly away from the body: the start and end of every motion.
STAND = np.array([0, 0, 0, -0.15, -0.05, 0.15, 0.05, -0.07, 0, 0.07, 0], dtype=np.float64)

# Segment lengths as fractions of the standing height (their sum, with the head, is ~1).
PROPORTIONS = {"torso": 0.30, "neck": 0.03, "head_radius": 0.085, "upper_arm": 0.16, "forearm": 0.15,
               "thigh": 0.245, "shin": 0.24}

# Joint order of :func:`joints`.
JOINTS = ("pelvis", "shoulder", "neck", "l_elbow", "l_hand", "r_elbow", "r_hand",
          "l_knee", "l_foot", "r_knee", "r_foot", "head")
# Drawn in this order (legs, torso, arms), the head last.
_SEGMENTS = ((0, 7), (7, 8), (0, 9), (9, 10), (0, 1), (1, 2), (1, 3), (3, 4), (1, 5), (5, 6))
_TORSO = ((0, 1), (1, 2))    # drawn in the torso colour, the rest in the limb colour
_SHIFT = 4  # cv2 fixed-point bits: actors move smoothly by 1/16 pixel


def mirror(poses):
    """Horizontal mirror of a pose or an ``(n, POSE_SIZE)`` pose sequence."""
    out = np.array(poses, dtype=np.float64, copy=True)
    out[..., X] *= -1
    out[..., _ANGLES] *= -1
    for a, b in _SWAP:
        out[..., [a, b]] = out[..., [b, a]]
    return out


class Appearance(NamedTuple):
    """How one actor looks; drawn from the same distribution whatever the action."""

    height: float                 # standing height in pixels
    thickness: int                # limb line width in pixels
    lengths: Tuple[float, ...]    # PROPORTIONS values (same order), jittered per actor, in pixels
    limb_color: Tuple[float, float, float]
    torso_color: Tuple[float, float, float]
    head_color: Tuple[float, float, float]


def _random_color(rng, luma_range):
    """A BGR colour whose luma lies in ``luma_range`` (so the actor stands out from its background)."""
    for _ in range(20):
        c = rng.uniform(0, 255, size=3)
        luma = 0.114 * c[0] + 0.587 * c[1] + 0.299 * c[2]
        if luma_range[0] <= luma <= luma_range[1]:
            break
    return tuple(float(v) for v in c)


def sample_appearance(rng, height, background_luma):
    """Random colours, limb thickness and proportions for an actor ``height`` pixels tall.

    Colours are chosen darker or brighter than ``background_luma`` (the mean luma of the
    background), never by action, so colour carries no class information.
    """
    luma_range = (10.0, max(20.0, background_luma - 60)) if background_luma > 128 else (
        min(235.0, background_luma + 60), 250.0)
    jitter = rng.uniform(0.93, 1.07, size=len(PROPORTIONS))
    lengths = tuple(float(v * j * height) for v, j in zip(PROPORTIONS.values(), jitter))
    return Appearance(height=float(height), thickness=max(2, int(round(rng.uniform(0.07, 0.1) * height))),
                      lengths=lengths, limb_color=_random_color(rng, luma_range),
                      torso_color=_random_color(rng, luma_range), head_color=_random_color(rng, luma_range))


def _direction(angle):
    return np.stack([np.sin(angle), np.cos(angle)], axis=-1)


def joints(poses, appearance, ground):
    """Joint positions ``(n, len(JOINTS), 2)`` in pixels for poses ``(n, POSE_SIZE)``.

    ``ground`` is ``(n, 2)``: per frame, the image point below the pelvis where the feet
    stand when ``x`` and ``lift`` are zero (camera motion included by the caller).
    """
    p = np.atleast_2d(poses)
    torso, neck, head_r, upper_arm, forearm, thigh, shin = appearance.lengths
    up = np.stack([np.sin(p[:, LEAN]), -np.cos(p[:, LEAN])], axis=-1)
    pelvis = np.zeros((len(p), 2))
    shoulder = pelvis + torso * up
    neck_top = shoulder + neck * up
    l_elbow = shoulder + upper_arm * _direction(p[:, L_SHOULDER])
    l_hand = l_elbow + forearm * _direction(p[:, L_SHOULDER] + p[:, L_ELBOW])
    r_elbow = shoulder + upper_arm * _direction(p[:, R_SHOULDER])
    r_hand = r_elbow + forearm * _direction(p[:, R_SHOULDER] + p[:, R_ELBOW])
    l_knee = pelvis + thigh * _direction(p[:, L_HIP])
    l_foot = l_knee + shin * _direction(p[:, L_HIP] + p[:, L_KNEE])
    r_knee = pelvis + thigh * _direction(p[:, R_HIP])
    r_foot = r_knee + shin * _direction(p[:, R_HIP] + p[:, R_KNEE])
    head = neck_top + head_r * up
    out = np.stack([pelvis, shoulder, neck_top, l_elbow, l_hand, r_elbow, r_hand,
                    l_knee, l_foot, r_knee, r_foot, head], axis=1)
    sole = np.maximum(l_foot[:, 1], r_foot[:, 1]) + appearance.thickness / 2
    offset = np.asarray(ground, dtype=np.float64).reshape(-1, 2) - np.stack([np.zeros(len(p)), sole], axis=-1)
    offset = offset + np.stack([p[:, X], -p[:, LIFT]], axis=-1) * appearance.height
    out = out + offset[:, None, :]
    # Quantize to the fixed-point grid cv2 draws on, so boxes match the pixels exactly.
    return np.round(out * (1 << _SHIFT)) / (1 << _SHIFT)


def extent(points, appearance):
    """Tight box ``(..., 4)`` x1, y1, x2, y2 of the drawn actor from :func:`joints` output."""
    half = appearance.thickness / 2
    limbs = points[..., :-1, :]
    head = points[..., -1, :]
    r = appearance.lengths[2]
    x1 = np.minimum(limbs[..., 0].min(-1) - half, head[..., 0] - r)
    y1 = np.minimum(limbs[..., 1].min(-1) - half, head[..., 1] - r)
    x2 = np.maximum(limbs[..., 0].max(-1) + half, head[..., 0] + r)
    y2 = np.maximum(limbs[..., 1].max(-1) + half, head[..., 1] + r)
    return np.stack([x1, y1, x2, y2], axis=-1)


def draw(image, points, appearance):
    """Draw one actor (joints of one frame from :func:`joints`) into ``image`` in place."""
    fixed = np.round(points * (1 << _SHIFT)).astype(np.int64)
    for a, b in _SEGMENTS:
        color = appearance.torso_color if (a, b) in _TORSO else appearance.limb_color
        cv2.line(image, tuple(int(v) for v in fixed[a]), tuple(int(v) for v in fixed[b]), color,
                 appearance.thickness, cv2.LINE_AA, _SHIFT)
    radius = int(round(appearance.lengths[2] * (1 << _SHIFT)))
    cv2.circle(image, tuple(int(v) for v in fixed[-1]), radius, appearance.head_color, -1, cv2.LINE_AA, _SHIFT)
