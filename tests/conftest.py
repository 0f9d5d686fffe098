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


def pytest_terminal_summary(terminalreporter, config):
    for title, lines in config.stash.get(_SECTIONS, []):
        terminalreporter.section(title)
        for line in lines:
            terminalreporter.write_line(line)
