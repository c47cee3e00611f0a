"""Retrieval-augmented chat: the step of a chat request that names a collection.

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
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional
from urllib.parse import quote

from pydantic import ValidationError

from serve.kernel.errors import BadRequest, validation_problem
from serve.kernel.protocol import RetrievalOptions
from serve.kernel.routing import last_user_text

if TYPE_CHECKING:
    from serve.services.collections import CollectionsService

#: The field of a chat body that asks for retrieval (ours, never sent to an engine).
RETRIEVAL_FIELD = "retrieval"

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


@dataclass(frozen=True)
class Retrieved:
    """What a chat request's retrieval found, and how it shows in the answer."""

    collection: str
    query: str
    results: list[dict[str, Any]]

    def headers(self) -> dict[str, str]:
        """The ``x-retrieval-ids`` header (a streamed answer carries only this)."""
        return {"x-retrieval-ids": retrieval_ids_header(self.results)}

    def attach(self, reply: dict[str, Any]) -> dict[str, Any]:
        """The reply with the passages and the citations added (a new dict)."""
        return attach(reply, self.collection, self.query, self.results)


class Retrieval:
    """Search a collection with a chat request's question, and give the request the
    passages as context.

    Args:
        collections: The collections service (its limits and its handle).
        context_chars: Most characters of passages put in the context
            (``collections.rag_context_chars``).
    """

    def __init__(self, collections: "CollectionsService", *, context_chars: int) -> None:
        self._collections = collections
        self._context_chars = context_chars

    @staticmethod
    def options(body: Any) -> Optional[RetrievalOptions]:
        """The request's retrieval options, or None when it asks for none.

        Raises:
            BadRequest: the options are malformed (the field named).
        """
        extra = body.__pydantic_extra__ or {}
        if RETRIEVAL_FIELD not in extra:
            return None
        try:
            return RetrievalOptions.model_validate(extra[RETRIEVAL_FIELD])
        except ValidationError as exc:
            message, param = validation_problem(exc.errors(), RETRIEVAL_FIELD)
            raise BadRequest(message, param=param) from None

    async def find(self, body: Any, options: RetrievalOptions) -> tuple[Any, Retrieved]:
        """Search, and a copy of ``body`` with the passages in its leading system message
        and without the retrieval field (``body`` itself is left as it came).

        Raises:
            BadRequest: no question to search with, or a search beyond the limits.
            NotFound: no such collection, or collections disabled.
        """
        self._collections.check_name(options.collection)
        query = options.query or last_user_text(body.messages)
        if not query.strip():
            raise BadRequest("retrieval needs a user message (or retrieval.query) to search with", param="retrieval.query")
        results = await self._collections.find(options.collection, query, options.k, options.filter)
        messages = with_context(body.messages, context_message(results, self._context_chars))
        with_passages = body.model_copy(update={"messages": messages})
        with_passages.__pydantic_extra__.pop(RETRIEVAL_FIELD, None)
        return with_passages, Retrieved(options.collection, query, results)
