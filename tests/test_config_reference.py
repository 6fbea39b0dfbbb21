"""docs/configuration.md is generated from the configuration models and must stay current; every
key has a documented meaning."""

from __future__ import annotations

from pathlib import Path

from gapless.config.reference import reference

DOC = Path(__file__).resolve().parent.parent / "docs" / "configuration.md"


def test_the_reference_matches_the_models():
    assert DOC.read_text() == reference(), "regenerate: python -m gapless.config.reference > docs/configuration.md"


def test_every_key_has_a_meaning():
    rows = [line for line in reference().splitlines() if line.startswith("| `")]
    assert len(rows) > 80
    undocumented = [row.split("|")[1].strip() for row in rows if not row.rstrip(" |").rsplit("|", 1)[-1].strip()]
    assert not undocumented, undocumented
