"""GPU memory planner: will this profile fit on its GPU, and where does the memory go?

Co-locating several models on one card fails in well-known ways: a Ray ``num_gpus``
fraction that disagrees with vLLM's ``gpu_memory_utilization``, a KV cache that cannot
hold one full-length sequence, weights that were never going to fit. The planner
computes, from each model's published architecture (``configs/models/*.json``, nothing
downloaded):

- weight bytes (quantized linear layers: packed weights + per-group scales and zeros;
  embeddings, lm_head and norms in the activation dtype),
- KV-cache bytes per token (``2 x layers x kv_heads x head_dim x dtype``) and the KV the
  profile needs (``max_model_len x kv_full_length_seqs``),
- a fixed runtime overhead per engine (CUDA context, activations, graphs),

and compares each model's need with its share of the declared GPU memory (its Ray
fraction, which is also vLLM's memory share). Profile validation refuses a plan that
does not fit, with this table in the message.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

GIB = 1024**3


@dataclass(frozen=True)
class ModelFacts:
    """The architecture facts the arithmetic needs (a published config.json, trimmed)."""

    name: str
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    vocab_size: int
    tie_word_embeddings: bool
    dtype_bytes: int
    quant_bits: Optional[int] = None
    quant_group_size: Optional[int] = None
    quant_zero_point: bool = False

    @classmethod
    def load(cls, path: Path) -> "ModelFacts":
        raw = json.loads(path.read_text())
        quant = raw.get("quantization") or {}
        return cls(
            name=raw["name"],
            hidden_size=raw["hidden_size"],
            intermediate_size=raw["intermediate_size"],
            num_hidden_layers=raw["num_hidden_layers"],
            num_attention_heads=raw["num_attention_heads"],
            num_key_value_heads=raw["num_key_value_heads"],
            head_dim=raw["head_dim"],
            vocab_size=raw["vocab_size"],
            tie_word_embeddings=raw["tie_word_embeddings"],
            dtype_bytes=raw["dtype_bytes"],
            quant_bits=quant.get("bits"),
            quant_group_size=quant.get("group_size"),
            quant_zero_point=bool(quant.get("zero_point", False)),
        )

    @property
    def linear_params(self) -> int:
        """Parameters of the decoder's linear layers (what quantization packs)."""
        h, i = self.hidden_size, self.intermediate_size
        q = self.num_attention_heads * self.head_dim
        kv = self.num_key_value_heads * self.head_dim
        per_layer = h * q + 2 * h * kv + q * h + 3 * h * i  # q,k,v,o + gate,up,down
        return self.num_hidden_layers * per_layer

    @property
    def embedding_params(self) -> int:
        """Input embeddings plus lm_head (one matrix when tied)."""
        copies = 1 if self.tie_word_embeddings else 2
        return copies * self.vocab_size * self.hidden_size

    @property
    def norm_params(self) -> int:
        """RMSNorm weights: two per layer, q/k norms (Qwen3), and the final norm."""
        return self.num_hidden_layers * (2 * self.hidden_size + 2 * self.head_dim) + self.hidden_size

    @property
    def num_parameters(self) -> int:
        return self.linear_params + self.embedding_params + self.norm_params

    @property
    def weight_bytes(self) -> int:
        """Bytes of the weights as loaded on the GPU."""
        unquantized = (self.embedding_params + self.norm_params) * self.dtype_bytes
        if not self.quant_bits:
            return unquantized + self.linear_params * self.dtype_bytes
        groups = self.linear_params // self.quant_group_size
        packed = self.linear_params * self.quant_bits // 8
        scales = groups * self.dtype_bytes
        zeros = groups * self.quant_bits // 8 if self.quant_zero_point else 0
        return unquantized + packed + scales + zeros

    @property
    def kv_bytes_per_token(self) -> int:
        """K and V for every layer, in the activation dtype."""
        return 2 * self.num_hidden_layers * self.num_key_value_heads * self.head_dim * self.dtype_bytes


@dataclass(frozen=True)
class PlanRow:
    """One model's line in the plan."""

    node: str
    model: str
    fraction: float
    share_bytes: int
    weight_bytes: int
    kv_bytes: int
    overhead_bytes: int
    kv_bytes_per_token: int = 0
    on_demand: bool = False
    """Woken when needed: it takes turns with the other on-demand models (serve/residency_plan)."""

    @property
    def need_bytes(self) -> int:
        return self.weight_bytes + self.kv_bytes + self.overhead_bytes

    @property
    def spare_bytes(self) -> int:
        return self.share_bytes - self.need_bytes

    @property
    def fits(self) -> bool:
        return self.spare_bytes >= 0

    @property
    def kv_tokens_available(self) -> int:
        """KV tokens the share can hold once weights and overhead are paid."""
        if not self.kv_bytes_per_token:
            return 0
        free = self.share_bytes - self.weight_bytes - self.overhead_bytes
        return max(free, 0) // self.kv_bytes_per_token


@dataclass(frozen=True)
class Plan:
    """The whole GPU plan of a profile."""

    profile: str
    gpu_bytes: int
    headroom_bytes: int
    rows: tuple[PlanRow, ...]

    @property
    def _at_once(self) -> list[PlanRow]:
        """The rows that hold memory all the time: the resident models and the embedder.
        On-demand models take turns in what is left; the residency plan
        (``serve/kernel/residency_plan.py``) checks that each fits its turn."""
        return [r for r in self.rows if not r.on_demand]

    @property
    def allocated_fraction(self) -> float:
        return sum(r.fraction for r in self._at_once)

    @property
    def unallocated_bytes(self) -> int:
        return self.gpu_bytes - sum(r.share_bytes for r in self._at_once)

    def problems(self) -> list[str]:
        """Why the plan does not fit (empty when it does)."""
        out = [
            f"{r.model} ({r.node}) needs {r.need_bytes / GIB:.2f} GiB but its share "
            f"({r.fraction:.2f} of {self.gpu_bytes / GIB:.0f} GiB) is {r.share_bytes / GIB:.2f} GiB: "
            f"short by {-r.spare_bytes / GIB:.2f} GiB"
            for r in self.rows
            if not r.fits
        ]
        if self.unallocated_bytes < self.headroom_bytes:
            out.append(
                f"GPU fractions leave {self.unallocated_bytes / GIB:.2f} GiB free, less than the "
                f"{self.headroom_bytes / GIB:.2f} GiB headroom the profile asks for: "
                f"short by {(self.headroom_bytes - self.unallocated_bytes) / GIB:.2f} GiB"
            )
        return out

    def table(self) -> str:
        """A fixed-width table of where the memory goes."""
        header = (
            f"{'node':<10} {'model':<36} {'share':>6} {'budget':>9} {'weights':>9} "
            f"{'kv cache':>9} {'overhead':>9} {'spare':>9} {'kv tokens':>10}"
        )
        lines = [f"GPU memory plan for profile {self.profile!r} ({self.gpu_bytes / GIB:.1f} GiB)", header, "-" * len(header)]
        for r in self.rows:
            tokens = f"{r.kv_tokens_available:,}" if r.kv_bytes_per_token else "-"
            lines.append(
                f"{r.node:<10} {r.model[:36]:<36} {r.fraction:>6.2f} {r.share_bytes / GIB:>8.2f}G "
                f"{r.weight_bytes / GIB:>8.2f}G {r.kv_bytes / GIB:>8.2f}G {r.overhead_bytes / GIB:>8.2f}G "
                f"{r.spare_bytes / GIB:>8.2f}G {tokens:>10}"
            )
        lines.append("-" * len(header))
        lines.append(
            f"{'free':<10} {'(beside the resident models)':<36} {1 - self.allocated_fraction:>6.2f} "
            f"{self.unallocated_bytes / GIB:>8.2f}G   headroom wanted {self.headroom_bytes / GIB:.2f}G"
        )
        problems = self.problems()
        lines.append("verdict: " + ("fits" if not problems else "DOES NOT FIT"))
        lines.extend(f"  - {p}" for p in problems)
        return "\n".join(lines)


MODELS_DIR = Path(__file__).resolve().parents[2] / "configs" / "models"


def load_facts(name: str) -> ModelFacts:
    """The facts fixture ``configs/models/<name>.json``."""
    path = MODELS_DIR / f"{name}.json"
    if not path.exists():
        known = sorted(p.stem for p in MODELS_DIR.glob("*.json"))
        raise ValueError(f"model facts {name!r} not found in {MODELS_DIR} (known: {known})")
    return ModelFacts.load(path)


def build_plan(profile, node_group: Optional[str] = None) -> Plan:
    """The GPU plan of a ``serve.kernel.config.Profile`` with ``device: gpu``: the card of
    one node of ``node_group`` and what is placed on it (None: the nodes without a group,
    which is the one card of a one-machine profile)."""
    group = profile.cluster.node_groups.get(node_group) if node_group else None
    gpu_bytes = int(((group.gpu_memory_gib if group is not None else None) or profile.gpu_memory_gib) * GIB)
    rows = []
    for spec in profile.models:
        if spec.resources.node_group != node_group:
            continue
        node = spec.role
        facts = load_facts(spec.model_facts)
        kv_dtype = str(spec.engine_kwargs.get("kv_cache_dtype", "auto"))
        kv_per_token = facts.kv_bytes_per_token
        if kv_dtype.startswith("fp8"):
            kv_per_token = kv_per_token // facts.dtype_bytes
        rows.append(
            PlanRow(
                node=node,
                model=spec.model_id,
                fraction=spec.resources.num_gpus,
                share_bytes=int(spec.resources.num_gpus * gpu_bytes),
                weight_bytes=facts.weight_bytes,
                kv_bytes=spec.max_model_len * spec.kv_full_length_seqs * kv_per_token,
                overhead_bytes=int(spec.runtime_overhead_gib * GIB),
                kv_bytes_per_token=kv_per_token,
                on_demand=spec.on_demand,
            )
        )
    emb = profile.embedder
    if emb.resources.num_gpus > 0 and emb.resources.node_group == node_group:
        facts = load_facts(emb.model_facts)
        rows.append(
            PlanRow(
                node="embedder",
                model=emb.model_id,
                fraction=emb.resources.num_gpus,
                share_bytes=int(emb.resources.num_gpus * gpu_bytes),
                weight_bytes=facts.weight_bytes,
                kv_bytes=0,
                overhead_bytes=int(emb.runtime_overhead_gib * GIB),
            )
        )
    return Plan(
        profile=profile.name if node_group is None else f"{profile.name}, node group {node_group}",
        gpu_bytes=gpu_bytes,
        headroom_bytes=int(profile.gpu_headroom_gib * GIB),
        rows=tuple(rows),
    )


def build_plans(profile) -> list[Plan]:
    """One GPU plan per card: the nodes without a group, then each node group with a GPU
    that holds a model or the embedder."""
    placed = {spec.resources.node_group for spec in profile.models}
    if profile.embedder.resources.num_gpus:
        placed.add(profile.embedder.resources.node_group)
    groups = sorted(g for g in placed if g is not None)
    return [build_plan(profile, None)] * (None in placed) + [build_plan(profile, g) for g in groups]
