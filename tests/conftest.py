"""Shared pytest hooks: tests can add a section to the end-of-run summary (``report_section``), so CI's log
shows what they measured (the CUDA kernels' registers per GPU, the TensorRT versions checked) with ``-q`` too.

Hypothesis runs without per-example deadlines (a 2-core CI machine under load misses 200 ms on calls that
take 1 ms alone) and prints the seed of a failure (``@reproduce_failure``) so that CI's log can replay it.
"""
import pytest
from hypothesis import settings

settings.register_profile("edge_stad", deadline=None, print_blob=True)
settings.load_profile("edge_stad")

_SECTIONS = pytest.StashKey()


@pytest.fixture
def report_section(request):
    """``report_section(title, lines)``: print ``lines`` under ``title`` after the test run."""
    def add(title, lines):
        request.config.stash.setdefault(_SECTIONS, []).append((title, list(lines)))
    return add


@pytest.fixture(scope="session")
def tiny_engine(tmp_path_factory):
    """``tiny_engine(labels)``: the FP32 ONNX Runtime engine of an untrained K=3 AMMA-ShuffleNetV2 at 64x64
    with those class names, built once per set of names for the whole session (tests only read it)."""
    built = {}

    def get(labels):
        if labels not in built:
            from model_helpers import tiny_model

            from edge_stad.build.pipeline import BuildOptions, build_engine

            built[labels] = tmp_path_factory.mktemp("tiny_engine") / "engine"
            build_engine(tiny_model("shufflenetv2", K=3, size=64), built[labels], BuildOptions(backend="onnxruntime"),
                         labels=labels, log=lambda _: None)
        return built[labels]
    return get


def pytest_terminal_summary(terminalreporter, config):
    for title, lines in config.stash.get(_SECTIONS, []):
        terminalreporter.section(title)
        for line in lines:
            terminalreporter.write_line(line)
