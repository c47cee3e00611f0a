"""Request and response models beyond the OpenAI ones that Ray Serve LLM provides.

Chat and completions use ``ray.serve.llm.openai_api_models`` (vLLM's protocol) as they
are. Embeddings are served by our own sentence-transformers deployment, so their OpenAI
request/response shapes are defined here, as are the graph's own endpoints.
"""

from __future__ import annotations

import re
import secrets
from typing import Annotated, Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field


#: The message roles of the OpenAI chat API. vLLM's protocol accepts any string (its
#: "custom" message type), and a chat template then renders or drops an unknown role
#: silently, so the ingress refuses it instead.
CHAT_ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})


def unknown_role(messages: Any) -> Optional[tuple[int, str]]:
    """The first message whose role is not an OpenAI chat role, as (index, role)."""
    for index, message in enumerate(messages or []):
        role = message.get("role") if isinstance(message, dict) else getattr(message, "role", None)
        if role not in CHAT_ROLES:
            return index, str(role)[:40]
    return None


def new_id(prefix: str) -> str:
    """An id the graph makes (``file-…``, ``resp_…``, ``msg_…``): no stored id ever comes from a caller."""
    return f"{prefix}{secrets.token_hex(12)}"


#: What a collection may be called: it names a directory (embedded store) or rows (a server).
COLLECTION_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
COLLECTION_NAME_RULE = ("collection names are 1-64 characters: lowercase letters, digits, '_' and '-', "
                        "starting with a letter or digit")


def valid_collection_name(name: object) -> bool:
    """Whether ``name`` is a collection name as a whole: ``fullmatch``, because ``$``
    also matches before a trailing newline, which would become part of a directory name."""
    return isinstance(name, str) and COLLECTION_NAME.fullmatch(name) is not None


class EmbeddingsRequest(BaseModel):
    """OpenAI ``POST /v1/embeddings`` body."""

    model_config = ConfigDict(extra="ignore")

    model: str = Field(description="The embedder's model id.")
    input: Union[str, list[str], list[int], list[list[int]]] = Field(
        description="A text or a list of texts (token arrays are not supported)."
    )
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: Optional[int] = Field(None, gt=0)
    user: Optional[str] = None


class EmbeddingItem(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: Union[list[float], str]


class EmbeddingsUsage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingsResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[EmbeddingItem]
    model: str
    usage: EmbeddingsUsage


#: How far extraction goes: ``fast`` stops after the rules, ``llm`` asks the extractor,
#: ``deep`` the reasoner, ``auto`` lets the router pick (``deployments/extraction/pipeline.py``).
ExtractMode = Literal["auto", "fast", "llm", "deep"]


class ExtractRequest(BaseModel):
    """``POST /v1/extract``: one document in, one validated record out."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    document: str = Field(min_length=1, description="The posting: an HTML page or plain text.")
    content_type: Optional[Literal["text/html", "text/plain"]] = Field(
        None, description="Sniffed from the document when not given."
    )
    schema_: Union[Literal["job_posting"], dict[str, Any]] = Field(
        "job_posting", alias="schema",
        description='"job_posting", or a JSON schema (an object) for the LLM to fill.',
    )
    mode: ExtractMode = Field(
        "auto",
        description="fast: no LLM; llm: the extractor fills every field; deep: the reasoner does; "
        "auto: fast first, then the routed model fills only the gaps.",
    )
    base_url: str = Field("", max_length=2000, description="The page's URL, to resolve relative links.")
    collection: Optional[str] = Field(
        None, description="Index the posting into this collection once extracted: its text is the document, the "
        "record its metadata (with `source.<field>`), searchable with filters (`job_posting` records only).")
    document_id: Optional[str] = Field(
        None, min_length=1, max_length=256, description="The document's id in the collection; default: a hash of the posting.")


class ExtractBatchRequest(BaseModel):
    """``POST /v1/extract/batch``: documents are validated one by one, so one bad
    document gets its own error instead of failing the batch."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    documents: list[Any] = Field(
        description="Each a string (the document) or an object with the /v1/extract fields."
    )
    schema_: Union[Literal["job_posting"], dict[str, Any]] = Field("job_posting", alias="schema")
    mode: ExtractMode = "auto"


#: NaN and Infinity are refused: JSON cannot carry them, so a stored one would make every
#: later answer holding that document fail.
MetadataScalar = Union[str, int, Annotated[float, Field(allow_inf_nan=False)], bool]
#: Most items a list value may hold (a posting's skills).
MAX_METADATA_LIST = 64
MetadataValue = Union[MetadataScalar, None, Annotated[list[MetadataScalar], Field(max_length=MAX_METADATA_LIST)]]


class CollectionDocument(BaseModel):
    """One document to store: its id, its text, and flat metadata to filter on."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1, description="Your id; upserting the same id replaces the document.")
    text: str = Field(min_length=1, description="The text; long texts are split into passages.")
    metadata: dict[str, MetadataValue] = Field(
        default_factory=dict, description="Flat key → a scalar, or a list of scalars (tags, skills).")


class UpsertRequest(BaseModel):
    """``POST /v1/collections/{collection}/documents``."""

    model_config = ConfigDict(extra="forbid")

    documents: list[CollectionDocument] = Field(min_length=1)


class SearchRequest(BaseModel):
    """``POST /v1/collections/{collection}/search``."""

    model_config = ConfigDict(extra="forbid")

    query: str = Field(min_length=1, description="Text to search for by meaning.")
    k: int = Field(5, ge=1, description="How many documents to return.")
    filter: Optional[dict[str, Any]] = Field(
        None, description='Metadata conditions, all must hold: {"lang": "en", "year": {"$gte": 2020}, "team": {"$in": ["a", "b"]}, '
        '"skills": {"$contains": "python"}, "date_posted": {"$gte": "2026-01-01"}}.'
    )


class RetrievalOptions(BaseModel):
    """The ``retrieval`` extension of a chat request: answer from a collection."""

    model_config = ConfigDict(extra="forbid")

    collection: str
    k: int = Field(4, ge=1)
    filter: Optional[dict[str, Any]] = None
    query: Optional[str] = Field(None, description="What to search for; default: the last user message.")
