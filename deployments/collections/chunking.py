"""Splitting long documents into overlapping passages for embedding.

A small embedding model reads a few hundred tokens at most; a long document embedded
whole is truncated and its tail becomes unsearchable. Passages end at whitespace where
one is near, and overlap so a sentence cut at one boundary is whole in the next.
"""

from __future__ import annotations


def chunk_spans(text: str, *, size: int, overlap: int) -> list[tuple[int, int]]:
    """``(start, end)`` character spans covering ``text``; at least one, even for "".

    Args:
        size: Longest passage, in characters.
        overlap: Characters each passage shares with the previous one (< size).
    """
    if overlap >= size:
        raise ValueError("overlap must be smaller than size")
    if len(text) <= size:
        return [(0, len(text))]
    spans, start = [], 0
    while start < len(text):
        end = min(start + size, len(text))
        if end < len(text):
            cut = text.rfind(" ", start + size // 2, end)
            if cut > start:
                end = cut
        spans.append((start, end))
        if end >= len(text):
            break
        start = max(end - overlap, start + 1)
        space = text.find(" ", start, end)
        if 0 <= space - start < overlap // 2:
            start = space + 1  # begin on a word, not inside one
    return spans
