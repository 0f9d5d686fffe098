"""Benchmark result files: a markdown table for people and the same numbers as JSON, written atomically."""
import json
import sys

from edge_stad.atomic import atomic_write, write_json


def save_results(base, markdown, data):
    """Write ``base.md`` and ``base.json`` and echo the markdown."""
    with atomic_write(base + ".md", "w", encoding="utf-8") as f:
        f.write(markdown)
    write_json(base + ".json", json.loads(json.dumps(data, default=str)))
    sys.stdout.write(markdown)
