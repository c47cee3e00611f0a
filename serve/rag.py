"""Retrieval-augmented chat: a chat request that names a collection.

``POST /v1/chat/completions`` with ``"retrieval": {"collection": "docs", "k": 4}``
searches the collection with the last user message, puts the passages in a system
message with their document ids, routes and answers as usual, and returns the
passages and their scores (``retrieval``) and the cited document ids (``citations``).
Citations are the retrieved ids the answer names in square brackets; when it names
none, they are the ids of every passage the answer was given (``citations_from``
says which), so a client can always link an answer to documents that exist.
"""

from __future__ import annotations

import re
from typing import Any, Optional
from urllib.parse import quote

INSTRUCTIONS = (
    "Answer the user's question using only the sources below. Cite every source you use "
    "by its id in square brackets, like [id]. If the sources do not hold the answer, say so."
)


def context_message(results: list[dict[str, Any]], max_chars: int) -> str:
    """The system message holding the passages, cut to ``max_chars`` in total."""
    blocks, used = [], 0
    for result in results:
        passage = result["text"][: max(0, max_chars - used)]
        if not passage:
            break
        blocks.append(f"[{result['id']}] {passage}")
        used += len(passage)
    sources = "\n\n".join(blocks) if blocks else "(no sources matched)"
    return f"{INSTRUCTIONS}\n\nSources:\n{sources}"


def with_context(messages: list[Any], context: str) -> list[Any]:
    """``messages`` with the context as (or appended to) the leading system message."""
    messages = [dict(m) for m in messages]
    if messages and messages[0].get("role") == "system" and isinstance(messages[0].get("content"), str):
        messages[0]["content"] = f"{messages[0]['content']}\n\n{context}"
        return messages
    return [{"role": "system", "content": context}, *messages]


def citations(answer: Optional[str], results: list[dict[str, Any]]) -> tuple[list[str], str]:
    """Retrieved ids the answer cites, or every retrieved id when it cites none."""
    retrieved = [r["id"] for r in results]
    named = re.findall(r"\[([^\[\]]{1,256})\]", answer or "")
    cited = [doc_id for doc_id in dict.fromkeys(named) if doc_id in retrieved]
    return (cited, "answer") if cited else (retrieved, "context")


def retrieval_ids_header(results: list[dict[str, Any]]) -> str:
    """The ``x-retrieval-ids`` header: the retrieved document ids, URL-quoted."""
    return ",".join(quote(r["id"], safe="") for r in results)


def attach(reply: dict[str, Any], collection: str, query: str, results: list[dict[str, Any]]) -> dict[str, Any]:
    """A chat reply with the retrieval and the citations added (a new dict)."""
    if "choices" not in reply:
        return reply
    answer = reply["choices"][0].get("message", {}).get("content") if reply["choices"] else None
    cited, source = citations(answer, results)
    return {**reply, "retrieval": {"collection": collection, "query": query, "results": results},
            "citations": cited, "citations_from": source}
