"""Stage 2: the visible text of a page, and what its markup says plainly.

Navigation, headers, footers, forms and cookie/consent banners are dropped before the
text is taken (``html-text`` already drops scripts and styles and keeps block layout
as line breaks), so rules and the LLM read the posting and not the page chrome. The
page is parsed once with lxml and shared with stage 1.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Optional
from urllib.parse import urljoin

_CHROME = "//head|//nav|//header|//footer|//form|//button|//noscript|//template|//iframe|//svg|//*[@role='navigation']"
_BANNER = re.compile(r"cookie|consent|gdpr|onetrust|newsletter|banner", re.IGNORECASE)
_APPLY_TEXT = re.compile(r"apply|bewerb|postuler|candidat|aplica|postula", re.IGNORECASE)
_HTML_SNIFF = re.compile(r"^\s*(?:<!doctype html|<html|<head|<body|<div|<article|<section|<main|<p\b|<h1|<script|<ul)", re.IGNORECASE)


@dataclass
class PageText:
    """What stage 2 hands to the rules: the text and the markup's plain facts."""

    text: str
    title: Optional[str] = None
    apply_url: Optional[str] = None
    truncated: bool = False


def looks_like_html(document: str) -> bool:
    """Whether a document with no declared content type is HTML."""
    return bool(_HTML_SNIFF.match(document))


def _squash(text: str) -> str:
    lines = (" ".join(line.split()) for line in text.splitlines())
    return "\n".join(line for line in lines if line)


def _node_text(node: Any) -> Optional[str]:
    text = " ".join(node.text_content().split())
    return text or None


def page_text(tree: Any, *, max_chars: int, base_url: str = "") -> PageText:
    """The visible text of a parsed page (one block per line), capped at ``max_chars``.

    Args:
        tree: The page as an lxml HTML tree; it is modified (chrome removed).
        max_chars: Longest text kept.
        base_url: Resolves a relative "Apply" link.
    """
    import html_text

    title = next((t for t in (_node_text(h) for h in tree.xpath("//h1")) if t), None)
    if title is None:
        head_title = tree.xpath("//title")
        if head_title and (text := _node_text(head_title[0])):
            title = re.split(r"\s[|–—-]\s", text)[0]  # "Data Engineer | Acme Careers"
    apply_url = None
    for link in tree.xpath("//a[@href]"):
        if _APPLY_TEXT.search(link.text_content() or ""):
            href = urljoin(base_url, link.get("href") or "")
            if href.startswith(("http://", "https://")):
                apply_url = href
                break
    doomed = list(tree.xpath(_CHROME))
    for node in tree.xpath("//*[@id or @class]"):
        if _BANNER.search(f"{node.get('id', '')} {node.get('class', '')}"):
            doomed.append(node)
    for node in doomed:
        if node.getparent() is not None:
            node.drop_tree()
    text = _squash(html_text.extract_text(tree, guess_layout=True))
    return PageText(text=text[:max_chars], title=title, apply_url=apply_url, truncated=len(text) > max_chars)


def plain_text(document: str, *, max_chars: int) -> PageText:
    """A plain-text posting: its first line is taken as the title candidate."""
    text = _squash(document)
    first = text.split("\n", 1)[0] if text else ""
    title = first if 0 < len(first) <= 120 and ":" not in first else None
    return PageText(text=text[:max_chars], title=title, truncated=len(text) > max_chars)


def fragment_text(fragment: str) -> str:
    """Text of a schema.org ``description`` (often HTML itself)."""
    if "<" not in fragment:
        return _squash(fragment)
    import html_text

    return _squash(html_text.extract_text(fragment, guess_layout=True))
