"""The OpenAI Files and Batches API's shapes, as OpenAI's reference describes them.

The shell's batch service and the Batches deployment (the job store) both speak them.
Objects are plain dicts on the wire (the JSON OpenAI returns); the models here validate
what a caller sends and name the statuses and endpoints the graph serves.
"""

from __future__ import annotations

from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field

#: The endpoints a batch may target (one per batch, as OpenAI requires).
BATCH_ENDPOINTS = ("/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/extract")
#: A batch's statuses, in the order a batch can pass through them.
BATCH_STATUSES = ("validating", "in_progress", "finalizing", "completed", "failed", "cancelling", "cancelled", "expired")
#: Statuses a batch ends in.
FINAL_STATUSES = frozenset({"completed", "failed", "cancelled", "expired"})
#: The windows a batch may ask for (OpenAI accepts only 24h).
COMPLETION_WINDOWS = {"24h": 24 * 3600}
#: File purposes: what a caller uploads, and what the graph writes.
FILE_PURPOSES = ("batch", "batch_output")
#: Metadata a batch may carry (OpenAI's limits: 16 pairs, keys 64 and values 512 characters).
MAX_METADATA_PAIRS, MAX_METADATA_KEY, MAX_METADATA_VALUE = 16, 64, 512


class BatchCreateRequest(BaseModel):
    """``POST /v1/batches``."""

    model_config = ConfigDict(extra="forbid")

    input_file_id: str = Field(min_length=1, max_length=64, description="A file uploaded with purpose `batch`.")
    endpoint: Literal["/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/extract"] = Field(
        description="Where every line of the file goes.")
    completion_window: Literal["24h"] = Field(description="How long the batch may take; then it expires.")
    metadata: Optional[dict[str, str]] = Field(None, description="Up to 16 key-value pairs of your own.")

    def metadata_problem(self) -> Optional[str]:
        """Why the metadata is refused (OpenAI's bounds), or None."""
        pairs = self.metadata or {}
        if len(pairs) > MAX_METADATA_PAIRS:
            return f"metadata has {len(pairs)} pairs; at most {MAX_METADATA_PAIRS}"
        for key, value in pairs.items():
            if len(key) > MAX_METADATA_KEY or len(value) > MAX_METADATA_VALUE:
                return f"metadata keys are at most {MAX_METADATA_KEY} characters and values {MAX_METADATA_VALUE}"
        return None


class BatchLine(BaseModel):
    """One line of a batch's input file."""

    model_config = ConfigDict(extra="forbid")

    custom_id: str = Field(min_length=1, max_length=512)
    method: Literal["POST"]
    url: str = Field(max_length=64)
    body: dict[str, Any]


def file_object(row: dict[str, Any]) -> dict[str, Any]:
    """A stored file as OpenAI's ``file`` object."""
    return {"id": row["id"], "object": "file", "bytes": row["bytes"], "created_at": row["created_at"],
            "filename": row["filename"], "purpose": row["purpose"], "status": "processed",
            "expires_at": None, "status_details": None}


def response_line(custom_id: str, request_id: str, status_code: int, body: Any) -> dict[str, Any]:
    """An output or error line for a request that ran: OpenAI's ``{id, custom_id, response, error}``."""
    return {"id": request_id, "custom_id": custom_id,
            "response": {"status_code": status_code, "request_id": request_id, "body": body}, "error": None}

