"""Construction properties of the synthetic classes: they differ by motion only, by design."""
import cv2
import numpy as np
import pytest

from edge_stad.data.synth import actors
from edge_stad.data.synth.motions import CLASSES, MOTIONS

PAIRS_REVERSED = [("sit_down", "stand_up")]
SAME_PARAMETERS = PAIRS_REVERSED + [("squat", "jump"), ("walk", "march")]
CIRCLES = ("arm_circles", "arm_circles_fast")


def sample(name, seed, n=50, room=2.0):
    motion = MOTIONS[name]
    return motion.sample(np.random.default_rng(seed), n, room), n


def test_every_class_in_a_pair_with_shared_parameters_and_placement():
    names = [m.name for m in CLASSES]
    assert len(names) == len(set(names)) == 8
    paired = {a for pair in SAME_PARAMETERS for a in pair} | set(CIRCLES)
    assert paired == set(names)
    for a, b in SAME_PARAMETERS:
        assert MOTIONS[a].sample is MOTIONS[b].sample   # same parameter distribution
        params, n = sample(a, 0)
        np.testing.assert_array_equal(MOTIONS[a].footprint(params, n), MOTIONS[b].footprint(params, n))


@pytest.mark.parametrize("name", [m.name for m in CLASSES])
def test_footprint_covers_the_poses(name):
    """Placement keeps the footprint in the frame, so it must reach at least as far as the poses."""
    params, n = sample(name, 6)
    app = appearance()
    ground = np.zeros((n, 2))
    box = actors.extent(actors.joints(MOTIONS[name].poses(params, n), app, ground), app)
    room = actors.extent(actors.joints(MOTIONS[name].footprint(params, n), app, ground), app)
    assert (box[:, :2].min(0) >= room[:, :2].min(0) - 1e-9).all()
    assert (box[:, 2:].max(0) <= room[:, 2:].max(0) + 1e-9).all()


@pytest.mark.parametrize("forward,backward", PAIRS_REVERSED)
@pytest.mark.parametrize("seed", range(5))
def test_time_reversed_pairs(forward, backward, seed):
    params, n = sample(forward, seed)
    a = MOTIONS[forward].poses(params, n)
    b = MOTIONS[backward].poses(params, n)
    assert a.shape == (n, actors.POSE_SIZE)
    np.testing.assert_array_equal(b, a[::-1])
    # hence the same set of single-frame poses, in another order
    np.testing.assert_array_equal(np.unique(a, axis=0), np.unique(b, axis=0))
    assert not np.array_equal(a, b)


@pytest.mark.parametrize("seed", range(5))
def test_jump_is_squat_plus_lift(seed):
    params, n = sample("squat", seed)
    squat = MOTIONS["squat"].poses(params, n)
    jump = MOTIONS["jump"].poses(params, n)
    body = [i for i in range(actors.POSE_SIZE) if i != actors.LIFT]
    np.testing.assert_array_equal(jump[:, body], squat[:, body])
    assert (squat[:, actors.LIFT] == 0).all()
    assert (jump[:, actors.LIFT] >= 0).all() and jump[:, actors.LIFT].max() > 0.05


@pytest.mark.parametrize("name", [m.name for m in CLASSES])
def test_facing_is_a_mirror(name):
    params, n = sample(name, 3)
    left = MOTIONS[name].poses(dict(params, facing=-1.0), n)
    right = MOTIONS[name].poses(dict(params, facing=1.0), n)
    np.testing.assert_allclose(left, actors.mirror(right), atol=1e-12)


@pytest.mark.parametrize("name", CIRCLES)
def test_front_view_classes_are_their_own_mirror(name):
    params, n = sample(name, 4)
    poses = MOTIONS[name].poses(params, n)
    np.testing.assert_allclose(actors.mirror(poses), poses, atol=1e-12)


def test_walk_travels_the_way_it_faces_and_march_stays():
    params, n = sample("walk", 1)
    for facing in (-1.0, 1.0):
        p = dict(params, facing=facing)
        walk = MOTIONS["walk"].poses(p, n)
        march = MOTIONS["march"].poses(p, n)
        assert np.sign(walk[-1, actors.X] - walk[0, actors.X]) == facing
        assert (march[:, actors.X] == 0).all()
        body = [i for i in range(actors.POSE_SIZE) if i != actors.X]
        np.testing.assert_array_equal(march[:, body], walk[:, body])  # the same gait, frame by frame


@pytest.mark.parametrize("n", [24, 40, 60])
def test_circle_classes_differ_only_in_speed(n):
    slow, fast = (MOTIONS[name] for name in CIRCLES)
    assert slow.poses is fast.poses  # same pose function: single frames come from one distribution
    for seed in range(20):
        s, f = slow.sample(np.random.default_rng(seed), n, 1.0), fast.sample(np.random.default_rng(seed), n, 1.0)
        assert n / s["cycles"] >= 14 > 12 >= n / f["cycles"]  # frames per turn never overlap (actions >= 24)
        assert {k: v for k, v in s.items() if k != "cycles"} == {k: v for k, v in f.items() if k != "cycles"}


def body(pose):
    """Pose without the x offset, angles wrapped to (-pi, pi] (arm circles end whole turns later)."""
    return np.angle(np.exp(1j * np.asarray(pose[1:], dtype=np.float64)))


@pytest.mark.parametrize("name", [m.name for m in CLASSES])
def test_motions_start_and_end_standing_or_sitting(name):
    """Untrimmed videos hold the first/last pose while idle, so those must be rest poses."""
    params, n = sample(name, 2)
    poses = MOTIONS[name].poses(params, n)
    stand = body(actors.STAND)
    if name != "stand_up":
        np.testing.assert_allclose(body(poses[0]), stand, atol=1e-9)
    if name != "sit_down":
        np.testing.assert_allclose(body(poses[-1]), stand, atol=1e-9)
    if name in ("sit_down", "stand_up"):
        seated = poses[-1] if name == "sit_down" else poses[0]
        assert min(abs(seated[actors.L_HIP]), abs(seated[actors.R_HIP])) > 1.1   # thighs near horizontal
    assert np.abs(np.diff(poses, axis=0)).max() < 1.0   # smooth: no pose teleports between frames


def test_walk_speed_respects_room():
    params, n = sample("walk", 0, n=60, room=0.3)
    x = MOTIONS["walk"].poses(params, n)[:, actors.X]
    assert np.ptp(x) <= 0.3 + 1e-9


def render(pose, appearance, ground, size=(96, 128)):
    image = np.zeros(size + (3,), np.uint8)
    points = actors.joints(pose[None], appearance, np.array([ground]))[0]
    actors.draw(image, points, appearance)
    return image, actors.extent(points, appearance)


def appearance(height=60.0, color=None):
    app = actors.sample_appearance(np.random.default_rng(0), height, background_luma=0.0)
    return app if color is None else app._replace(limb_color=color, torso_color=color, head_color=color)


@pytest.mark.parametrize("name", ["walk", "sit_down", "jump", "arm_circles_fast"])
def test_box_is_tight_around_the_drawn_pixels(name):
    params, n = sample(name, 0, room=0.2)
    app = appearance(color=(255.0, 255.0, 255.0))
    for pose in MOTIONS[name].poses(params, n)[::7]:
        image, box = render(pose, app, (60.3, 85.7))
        ys, xs = np.nonzero(image.max(axis=2) >= 128)   # pixels at least half covered
        drawn = np.array([xs.min(), ys.min(), xs.max(), ys.max()], dtype=np.float64)
        assert np.abs(drawn - box).max() <= 1.0, (drawn, box)


def test_mirrored_pose_draws_the_mirrored_image():
    params, n = sample("sit_down", 5)
    pose = MOTIONS["sit_down"].poses(params, n)[-1]
    app = appearance()
    width = 128
    image, box = render(pose, app, (50.0, 85.0))
    flipped, flipped_box = render(actors.mirror(pose), app, (width - 1 - 50.0, 85.0))
    np.testing.assert_allclose(flipped_box, [width - 1 - box[2], box[1], width - 1 - box[0], box[3]], atol=1e-9)
    diff = np.abs(cv2.flip(image, 1).astype(int) - flipped.astype(int))
    assert diff.mean() < 1.0   # identical up to anti-aliasing rounding


def test_feet_stay_on_the_ground_unless_lifted():
    app = appearance()
    ground = np.array([[64.0, 80.0]])
    for name in ("walk", "sit_down", "squat"):
        params, n = sample(name, 0)
        for pose in MOTIONS[name].poses(params, n):
            feet = actors.joints(pose[None], app, ground)[0][[actors.JOINTS.index("l_foot"),
                                                              actors.JOINTS.index("r_foot")], 1]
            assert feet.max() + app.thickness / 2 == pytest.approx(80.0, abs=1 / 16)
