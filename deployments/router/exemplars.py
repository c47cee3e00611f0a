"""Labeled exemplars for the semantic routing policy (``configs/router/exemplars.txt``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

ROLES = ("extractor", "reasoner")


@dataclass(frozen=True)
class Exemplar:
    """One labeled prompt: which model it needs, and what kind of request it is."""

    label: str
    category: str
    prompt: str


def load_exemplars(path: Path) -> list[Exemplar]:
    """Parse ``label|category|prompt`` lines; ``#`` lines and blanks are skipped.

    Raises:
        ValueError: a malformed line or an unknown label (with its line number).
    """
    out = []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        parts = line.split("|", 2)
        if len(parts) != 3 or parts[0] not in ROLES or not parts[2].strip():
            raise ValueError(f"{path}:{number}: expected 'extractor|category|prompt' or 'reasoner|...'")
        out.append(Exemplar(parts[0], parts[1], parts[2].strip()))
    return out
