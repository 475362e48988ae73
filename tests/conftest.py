"""Shared fixtures: a CliRunner that keeps stdout and stderr apart, tiny data files, and the
scripted OpenAI-compatible server (tests/scripted.py; modules import it as ``from scripted import
Scripted``, or take the ``scripted`` fixture)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from hypothesis import settings
from typer.testing import CliRunner

from scripted import Scripted
from smm4h_cli.cli import app

# Property tests: a bounded number of examples so that they run in seconds, locally and in CI
# (HYPOTHESIS_PROFILE=thorough, or pytest --hypothesis-profile thorough, searches harder).
settings.register_profile("ci", max_examples=60, deadline=None, print_blob=True)
settings.register_profile("thorough", max_examples=2000, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "sample_data"


@pytest.fixture
def cli():
    runner = CliRunner()

    def invoke(*args, input=None):
        return runner.invoke(app, [str(a) for a in args], input=input, catch_exceptions=False)

    return invoke


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    """Six labelled posts, two of them positive."""
    rows = [
        {"id": "a", "text": "my son was diagnosed with autism today", "label": 1},
        {"id": "b", "text": "our daughter has asthma and a cough again", "label": 1},
        {"id": "c", "text": "autism awareness month starts today", "label": 0},
        {"id": "d", "text": "the weather is lovely today", "label": 0},
        {"id": "e", "text": "a celebrity's son has ADHD says the news", "label": 0},
        {"id": "f", "text": "baby kicked all night long", "label": 0},
    ]
    return write_jsonl(tmp_path / "tiny.jsonl", rows)


@pytest.fixture
def scripted():
    """Start scripted servers: ``server = scripted({call: [actions]})``; each is stopped after the test."""
    servers: list[Scripted] = []

    def start(script: dict[int, list[tuple]] | None = None, **options) -> Scripted:
        server = Scripted(script, **options).__enter__()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.__exit__(None, None, None)
