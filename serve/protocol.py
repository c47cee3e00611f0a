"""Request and response models beyond the OpenAI ones that Ray Serve LLM provides.

Chat and completions use ``ray.serve.llm.openai_api_models`` (vLLM's protocol) as they
are. Embeddings are served by our own sentence-transformers deployment, so their OpenAI
request/response shapes are defined here, as are the graph's own endpoints.
"""

from __future__ import annotations

from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field


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


class RouteResponse(BaseModel):
    """``POST /v1/route``: what the router would do with a chat body."""

    target: str = Field(description="Model id the request would be sent to.")
    role: str = Field(description="extractor or reasoner.")
    reason: str = Field(description="Why, in one line (also the x-route-reason header).")
    policy: str
    score: float
    threshold: float
    features: dict[str, Any]
    pinned: bool = Field(False, description="True when the client named the model.")
