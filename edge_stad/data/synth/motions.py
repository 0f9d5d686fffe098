"""The synthetic action classes: pose trajectories that differ by motion only.

Every class draws its actors from the same appearance distribution; what separates the
classes is how the pose changes over time, and the classes come in pairs whose single
frames are interchangeable by construction, so a detector needs temporal cues. Three
pairs differ in how much and where the body moves (what micro-motion sees within one
clip); one pair differs only in the direction of time (what needs several clips):

  walk / march                   the same gait; walk travels the way the figure faces,
                                 march stays on the spot
  squat / jump                   the same body poses at the same times; jump adds a
                                 vertical lift while the legs are extended
  arm_circles / arm_circles_fast both arms circle in the image plane, either way round;
                                 one turn takes 18-28 frames, or 8-12
  sit_down / stand_up            stand_up is sit_down played backwards in time

Every class is also mirror-symmetric as a distribution: the figure faces left or right
with probability 1/2 (:func:`edge_stad.data.synth.actors.mirror`). Classes that differ
only by a horizontal direction (walk_left / walk_right) are avoided on purpose: the
trainer's horizontal-flip augmentation would swap them without swapping the label.

A motion is ``sample(rng, n, room) -> params`` plus ``poses(params, n) -> (n, POSE_SIZE)``;
paired classes share ``sample``, so their parameters have the same distribution.
``room`` is the horizontal travel (in actor heights) that fits in the frame. Actors are
placed so that their ``footprint`` trajectory fits in the frame; squat uses jump's, so
that where an actor stands in the frame does not tell the two apart either.
"""
import math
from typing import Callable, Dict, NamedTuple

import numpy as np

from edge_stad.data.synth.actors import (
    L_ELBOW,
    L_HIP,
    L_KNEE,
    L_SHOULDER,
    LEAN,
    LIFT,
    POSE_FIELDS,
    POSE_SIZE,
    R_ELBOW,
    R_HIP,
    R_KNEE,
    R_SHOULDER,
    STAND,
    X,
    mirror,
)


class Motion(NamedTuple):
    name: str
    description: str
    sample: Callable[[np.random.Generator, int, float], Dict[str, float]]
    poses: Callable[[Dict[str, float], int], np.ndarray]
    footprint: Callable[[Dict[str, float], int], np.ndarray]   # poses whose extent decides placement


def _pose(**angles):
    """STAND with the named fields replaced."""
    pose = STAND.copy()
    for name, value in angles.items():
        pose[POSE_FIELDS.index(name)] = value
    return pose


# Key poses, for a figure facing +x (image right); lower-limb angles are relative.
SIT = _pose(lean=0.25, l_shoulder=0.55, l_elbow=0.5, r_shoulder=0.45, r_elbow=0.6,
            l_hip=1.45, l_knee=-1.45, r_hip=1.35, r_knee=-1.35)
CROUCH = _pose(lean=0.5, l_shoulder=-0.6, l_elbow=0.1, r_shoulder=-0.7, r_elbow=0.1,
               l_hip=1.25, l_knee=-1.75, r_hip=1.15, r_knee=-1.65)
REACH = _pose(lean=-0.05, l_shoulder=2.75, l_elbow=0.1, r_shoulder=2.85, r_elbow=0.1)


def _smooth(u):
    return u * u * (3 - 2 * u)


def _envelope(n, frames):
    """0 at both ends, 1 in between, with smooth ramps of ``frames``: motions start and end standing."""
    t = np.arange(n, dtype=np.float64)
    r = max(1.0, float(frames))
    return _smooth(np.clip(np.minimum(t, n - 1 - t) / r, 0.0, 1.0))


def _facing(params, poses):
    return mirror(poses) if params["facing"] < 0 else poses


def _reversed(poses_fn):
    def poses(params, n):
        return poses_fn(params, n)[::-1].copy()
    return poses


def _common(rng, n):
    return {"facing": float(rng.choice([-1.0, 1.0])), "ramp": float(min(4, n // 4))}


def _sample_walk(rng, n, room):
    params = _common(rng, n)
    # Speed in heights per frame; capped so that the path stays in the frame.
    params.update(period=rng.uniform(16, 26), amplitude=rng.uniform(0.3, 0.45), phase=rng.uniform(0, 2 * math.pi),
                  speed=min(rng.uniform(0.012, 0.025), max(room, 0.0) / n))
    return params


def _walk(params, n):
    env = _envelope(n, params["ramp"])
    phi = params["phase"] + 2 * math.pi * np.arange(n) / params["period"]
    swing = env * params["amplitude"] * np.sin(phi)
    p = np.tile(STAND, (n, 1))
    p[:, L_HIP] += swing
    p[:, R_HIP] -= swing
    p[:, L_KNEE] -= env * 0.9 * np.maximum(0.0, np.cos(phi))   # the swinging leg bends its knee
    p[:, R_KNEE] -= env * 0.9 * np.maximum(0.0, -np.cos(phi))
    p[:, L_SHOULDER] -= 0.8 * swing                              # arms swing against the legs
    p[:, R_SHOULDER] += 0.8 * swing
    p[:, L_ELBOW] += env * 0.35
    p[:, R_ELBOW] += env * 0.35
    p[:, LEAN] += env * 0.06
    x = params["speed"] * np.cumsum(env)
    p[:, X] = x - (x[0] + x[-1]) / 2
    return _facing(params, p)


def _sample_sit(rng, n, room):
    params = _common(rng, n)
    params.update(hold_in=rng.uniform(0, 0.2), hold_out=rng.uniform(0, 0.2), depth=rng.uniform(0.85, 1.0),
                  bend=rng.uniform(0.2, 0.45))
    return params


def _march(params, n):
    """The walk's gait on the spot: the same poses, no travel."""
    p = _walk(params, n)
    p[:, X] = 0.0
    return p


def _sit_down(params, n):
    t = np.arange(n, dtype=np.float64)
    a, b = params["hold_in"] * (n - 1), (1 - params["hold_out"]) * (n - 1)
    u = _smooth(np.clip((t - a) / max(b - a, 1.0), 0.0, 1.0))
    p = STAND + (u * params["depth"])[:, None] * (SIT - STAND)
    p[:, LEAN] += params["bend"] * np.sin(math.pi * u)          # lean forward while lowering
    return _facing(params, p)


def _sample_squat(rng, n, room):
    params = _common(rng, n)
    params.update(period=rng.uniform(18, 28), depth=rng.uniform(0.7, 1.0), height=rng.uniform(0.12, 0.25),
                  phase=rng.uniform(0, 2 * math.pi))
    return params


def _squat_cycle(params, n):
    """Body poses and extension (0..1) of the crouch-and-reach cycle shared by squat and jump."""
    env = _envelope(n, params["ramp"])
    phi = params["phase"] + 2 * math.pi * np.arange(n) / params["period"]
    crouch = params["depth"] * (1 - np.cos(phi)) / 2
    extension = env * np.maximum(0.0, np.cos(phi)) ** 2
    p = STAND + (env * crouch)[:, None] * (CROUCH - STAND) + extension[:, None] * (REACH - STAND)
    return p, extension


def _squat(params, n):
    return _facing(params, _squat_cycle(params, n)[0])


def _jump(params, n):
    p, extension = _squat_cycle(params, n)
    p[:, LIFT] = params["height"] * extension
    return _facing(params, p)


def _circles_sampler(turn_frames):
    """Arm-circle parameters; the two circle classes differ only in frames per turn."""
    def sample(rng, n, room):
        params = _common(rng, n)
        lo, hi = turn_frames
        fewest = max(1, math.ceil(n / hi))  # whole turns keeping a turn within the frame band where possible
        cycles = min(max(round(n / rng.uniform(lo, hi)), fewest), max(fewest, n // lo))
        params.update(cycles=float(cycles), bend=rng.uniform(0.0, 0.3), direction=float(rng.choice([-1.0, 1.0])))
        return params
    return sample


def _arm_circles(params, n):
    """Both arms turn whole circles, hands rising along the sides (direction 1) or across the body (-1)."""
    env = _envelope(n, params["ramp"])
    travel = np.cumsum(env) - env[0]
    theta = 2 * math.pi * params["cycles"] * travel / max(travel[-1], 1e-9)   # whole turns: ends arms down
    bend = params["bend"] * np.sin(theta / 2) ** 2
    theta = params["direction"] * theta
    p = np.tile(STAND, (n, 1))
    p[:, L_SHOULDER] -= theta
    p[:, R_SHOULDER] += theta
    p[:, L_ELBOW] -= bend
    p[:, R_ELBOW] += bend
    return _facing(params, p)


CLASSES = (
    Motion("walk", "profile gait, travelling the way the figure faces", _sample_walk, _walk, _walk),
    Motion("march", "the walk's gait on the spot", _sample_walk, _march, _walk),
    Motion("squat", "repeated crouch (arms back) and rise (arms overhead), feet on the ground",
           _sample_squat, _squat, _jump),
    Motion("jump", "the squat poses with a vertical lift while the legs are extended", _sample_squat, _jump, _jump),
    Motion("arm_circles", "both arms turn full circles, 18-28 frames per turn", _circles_sampler((18, 28)),
           _arm_circles, _arm_circles),
    Motion("arm_circles_fast", "arm_circles at 8-12 frames per turn", _circles_sampler((8, 12)), _arm_circles,
           _arm_circles),
    Motion("sit_down", "standing, lowering onto an invisible seat, sitting", _sample_sit, _sit_down, _sit_down),
    Motion("stand_up", "sit_down played backwards in time", _sample_sit, _reversed(_sit_down), _sit_down),
)
MOTIONS = {m.name: m for m in CLASSES}


def sway(rng, n):
    """Small idle movements ``(n, POSE_SIZE)`` to add to a still pose (distractors, untrimmed idle parts)."""
    t = np.arange(n, dtype=np.float64)
    out = np.zeros((n, POSE_SIZE))
    out[:, LEAN] = rng.uniform(0.01, 0.04) * np.sin(2 * math.pi * t / rng.uniform(30, 60) + rng.uniform(0, 6.3))
    arms = rng.uniform(0.03, 0.1) * np.sin(2 * math.pi * t / rng.uniform(20, 50) + rng.uniform(0, 6.3))
    out[:, L_SHOULDER] = arms
    out[:, R_SHOULDER] = arms
    legs = rng.uniform(0.0, 0.03) * np.sin(2 * math.pi * t / rng.uniform(30, 60) + rng.uniform(0, 6.3))
    out[:, L_HIP] = legs
    out[:, R_HIP] = legs
    return out
