"""Benchmark result files: a markdown table for people and the same numbers as JSON, written atomically."""
import json
import sys

from edge_stad.atomic import atomic_write, write_json


def save_results(base, markdown, data, json_path=None, echo=True):
    """Write ``base.md`` and ``base.json`` (or ``json_path``); echo the markdown unless ``echo`` is False."""
    with atomic_write(base + ".md", "w", encoding="utf-8") as f:
        f.write(markdown)
    write_json(json_path or base + ".json", json.loads(json.dumps(data, default=str)))
    if echo:
        sys.stdout.write(markdown)
