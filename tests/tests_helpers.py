"""Small helpers shared by tests."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def leftovers(folder: Path) -> list[Path]:
    """Temporary files or folders an interrupted write might leave."""
    return [p for p in Path(folder).rglob("*") if p.name.endswith((".partial", ".old"))]
