"""The tiny synthetic dataset, generated once per test session and shared by the data tests."""
from edge_stad.data.synth.generate import generate_dataset

_made = {}


def tiny_synth(tmp_path_factory, seed=0):
    """Path of the ``tiny`` preset for ``seed`` (read-only: copy it before changing anything)."""
    if seed not in _made:
        _made[seed] = generate_dataset(tmp_path_factory.mktemp("synth") / "tiny", "tiny", seed)
    return _made[seed]
