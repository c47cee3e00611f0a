"""Process-level tunables that are not part of a profile.

Everything a profile does not describe (where caches live, API keys, request limits that
an operator may want to change without editing a profile) is read here, from environment
variables that all start with ``LLMGRAPH_``. This is the only module that reads them.

Secrets (API keys, the fallback provider's key) are ``SecretStr`` (never printed in a
repr or a log) and are never bound into a deployment: the ingress replica reads them
from its own environment or ``LLMGRAPH_API_KEYS_FILE``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Environment settings (``LLMGRAPH_<FIELD>``)."""

    # An empty variable counts as unset: `LLMGRAPH_X=` turns a switch off, as its default is.
    model_config = SettingsConfigDict(env_prefix="LLMGRAPH_", extra="ignore", env_ignore_empty=True)

    cache_dir: Path = Field(
        default=Path.home() / ".cache" / "local-llm-graph",
        description="Where generated test checkpoints and other caches are written.",
    )
    data_dir: Path = Field(
        default=Path.home() / ".local" / "share" / "local-llm-graph",
        description="Where document collections are stored (durable data: back it up, keep it).",
    )
    api_keys: SecretStr = Field(
        default=SecretStr(""),
        description=(
            "Comma-separated bearer tokens. Empty means no authentication, which is only "
            "acceptable while the server binds to 127.0.0.1."
        ),
    )
    api_keys_file: Optional[Path] = Field(
        default=None,
        description=(
            "File with one API key per line (blank lines and # comments ignored); a line "
            "`<key> admin` marks a key for operator actions (sleep, wake, dropping a collection)."
        ),
    )
    postgres_url: SecretStr = Field(
        default=SecretStr(""),
        description="PostgreSQL URL for a profile whose collections.backend is postgres (a secret: prefer the file).",
    )
    postgres_url_file: Optional[Path] = Field(
        default=None,
        description="File holding the PostgreSQL URL (a mounted Kubernetes secret); wins over postgres_url.",
    )
    allow_unauthenticated: bool = Field(
        default=False,
        description=(
            "Accept serving beyond loopback with no API keys. Off by default: the graph "
            "refuses to start in that case."
        ),
    )
    fallback_url: Optional[str] = Field(
        default=None,
        description=(
            "Base URL (…/v1) of an OpenAI-compatible provider tried last for auto traffic "
            "when every local model failed before its first byte. Unset: no remote hop."
        ),
    )
    fallback_api_key: SecretStr = Field(default=SecretStr(""), description="Bearer key for the fallback provider.")
    fallback_model: str = Field(default="", description="Model name to ask the fallback provider for.")
    fallback_timeout_s: float = Field(default=120.0, gt=0, description="Timeout of the remote hop.")
    fallback_max_reply_bytes: int = Field(
        default=8 * 1024 * 1024, gt=0,
        description="Largest reply taken from the fallback provider, after decompression; a longer one is a 502.",
    )
    max_body_bytes: int = Field(
        default=2 * 1024 * 1024,
        gt=0,
        description="Largest accepted request body; larger bodies get 413.",
    )
    gpu_telemetry_file: Optional[Path] = Field(
        default=None,
        description=(
            "Read GPU samples from this JSON file instead of NVML: for simulations, "
            "demos and tests of the thermal admission without a hot GPU."
        ),
    )
    router_timeout_s: float = Field(
        default=2.0,
        gt=0,
        description="How long an `auto` request waits for the router; then it goes to the extractor.",
    )
    embedder_timeout_s: float = Field(
        default=300.0,
        gt=0,
        description=(
            "How long a request waits for the embedder (embeddings, collection reads and "
            "writes; an upsert of many long documents on CPU takes minutes); then 503."
        ),
    )
    extraction_timeout_s: float = Field(
        default=600.0,
        gt=0,
        description="How long one /v1/extract document may take (parsing, LLM calls, one repair); then 503.",
    )
    readiness_timeout_s: float = Field(
        default=2.0,
        gt=0,
        description=(
            "How long a deployment may take to answer its health check before it counts as "
            "down, for /readyz and for the fallback (checked every second in the background)."
        ),
    )

    down_model_wait_s: float = Field(
        default=30.0,
        gt=0,
        description=(
            "How long a request waits for the last model it may use while Serve runs no replica of it "
            "(one is being replaced, or its node is gone); then 503 with Retry-After."
        ),
    )

    engine_start_delay_s: float = Field(
        default=0.0,
        ge=0,
        description=(
            "Test and drill knob: an LLM engine's start waits this long first (off the replica's event "
            "loop, as the start itself), to show that a slow start costs no health check."
        ),
    )

    # Set by the graph itself, in the runtime environment of its replicas and engines
    # (serve/kernel/core_plan.py, deployments/llm/builder.py): read here like the rest.
    control_cores: str = Field(
        default="", description="Cores the graph's control-plane replicas keep to, e.g. `0` (set by the graph).")
    move_ray_daemons: bool = Field(
        default=False, description="The first replica on each node moves Ray's own processes to `control_cores` "
        "(set by the graph from the profile's `move_ray_daemons`).")
    engine_cores: str = Field(default="", description="Cores a CPU engine computes on (set by the graph).")
    engine_watchdog: bool = Field(
        default=False, description="An engine process exits when the replica that started it dies (set by the graph).")
    ray_worker_niceness: int = Field(
        default=15, validation_alias="RAY_worker_niceness",
        description="Ray's own setting, read for the benchmarks: the niceness Ray gives its workers (15 by default); "
        "a fair baseline runs at the same.")

    @property
    def api_key_set(self) -> frozenset[str]:
        """The configured API keys (environment and file), without blanks."""
        return frozenset(self._key_scopes())

    @property
    def admin_key_set(self) -> frozenset[str]:
        """The keys that may take operator actions: those the keys file marks ``admin``,
        or the only key when there is one (a one-person graph keeps working as it did)."""
        scopes = self._key_scopes()
        if len(scopes) == 1:
            return frozenset(scopes)
        return frozenset(key for key, admin in scopes.items() if admin)

    def _key_scopes(self) -> dict[str, bool]:
        """Every key, and whether it is an admin key.

        Raises:
            ValueError: a keys-file line has a scope other than ``admin`` (the line
                number is named, never the key).
        """
        scopes = {key.strip(): False for key in self.api_keys.get_secret_value().split(",") if key.strip()}
        if self.api_keys_file:
            for number, line in enumerate(self.api_keys_file.read_text().splitlines(), 1):
                words = line.split()
                if not words or words[0].startswith("#"):
                    continue
                if words[1:] not in ([], ["admin"]):
                    raise ValueError(f"{self.api_keys_file}, line {number}: after the key, only the scope 'admin' is allowed")
                scopes[words[0]] = scopes.get(words[0], False) or words[1:] == ["admin"]
        return scopes


def load_settings() -> Settings:
    """Read the settings from the current environment."""
    return Settings()


def configured_postgres_url() -> str:
    """The collections database's URL, read in the replica that connects (never bound,
    never logged): ``LLMGRAPH_POSTGRES_URL_FILE`` first, then ``LLMGRAPH_POSTGRES_URL``.

    Raises:
        ValueError: neither is set, or the file cannot be read.
    """
    settings = load_settings()
    if settings.postgres_url_file is not None:
        try:
            url = settings.postgres_url_file.read_text().strip()
        except OSError as exc:
            raise ValueError(f"LLMGRAPH_POSTGRES_URL_FILE cannot be read ({exc.strerror})") from None
    else:
        url = settings.postgres_url.get_secret_value().strip()
    if not url:
        raise ValueError("collections.backend is postgres: set LLMGRAPH_POSTGRES_URL_FILE (or LLMGRAPH_POSTGRES_URL)")
    return url


def configured_api_keys() -> frozenset[str]:
    """The API keys, read in the process that checks them (a replica), never passed in."""
    return load_settings().api_key_set


def configured_admin_keys() -> frozenset[str]:
    """The admin keys (:attr:`Settings.admin_key_set`), read as :func:`configured_api_keys` is."""
    return load_settings().admin_key_set
