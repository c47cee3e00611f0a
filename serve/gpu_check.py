"""``python -m serve gpu-check``: the GPU profiles on a real card, with no weights to download.

vLLM's ``load_format: dummy`` runs a real-size model with random weights; speed and
memory do not depend on the weights' values. So the check builds, from each model's
published architecture (``configs/models/*.json``), a checkpoint directory holding only
what the engine reads before the weights (``config.json`` with the right quantization
config, a tokenizer whose ids fit the vocabulary, the chat template), writes a copy of
the profile whose models load from those directories with ``load_format: dummy``, and
runs that graph.

``--dry-run`` does every step that needs no GPU: it builds the checkpoints, validates the
check profile, prints the memory and residency plans (on the card given by
``--card-gib``, with the ``gpu_memory_utilization`` each engine will get there, see
``deployments/llm/footprint.memory_utilization``), and lists the steps with their time
budgets. It runs in the test suite.

A real run (on a machine with an NVIDIA GPU and the ``gpu`` extra installed) then starts
the graph with ``serve run``, and measures: the card (NVML name, memory, bandwidth from bus
width and memory clock); each engine's GPU memory by NVML against the planner's figure;
start-to-ready; single-stream decode tokens/s per model against the bandwidth ceiling
(weight bytes per token / bandwidth); throughput at concurrency 16 with every engine
co-located; temperature, power and throttle reasons during the load. It writes
``bench-results/gpu-check.json`` and a PNG.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import yaml

from serve.kernel.config import CONFIGS_DIR, Profile, load_profile
from serve.kernel.planner import GIB, build_plan, load_facts
from serve.kernel.residency_plan import build_residency_plan

#: Files a dummy checkpoint takes from a generated tiny checkpoint: a tokenizer whose ids
#: are all below any real vocabulary size, and the Qwen3 chat template.
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "generation_config.json")


@dataclass(frozen=True)
class Step:
    """One step of the check and the wall time it may take (``--quick`` / full)."""

    name: str
    quick_s: int
    full_s: int
    needs_gpu: bool
    what: str


STEPS = (
    Step("install", 90, 300, True, "the gpu extra (ray[serve,llm], vllm) in .venv-gpu when vllm is missing: pip, "
         "from the package index or a wheelhouse (--find-links)"),
    Step("checkpoints", 10, 30, False, "config.json + tokenizer per model, from configs/models (no weights); the "
         "embedder's random weights are written on the GPU machine"),
    Step("plan", 5, 5, False, "memory and residency plans on this card; each engine's gpu_memory_utilization"),
    Step("card", 5, 5, True, "NVML: name, memory, memory bandwidth (bus width x memory clock)"),
    Step("start", 150, 420, True, "serve run on the check profile until /readyz; engines start one at a time"),
    Step("memory", 5, 10, True, "NVML memory of each engine's processes against the planner's figure"),
    Step("decode", 30, 180, True, "single-stream decode tokens/s per model against the bandwidth ceiling"),
    Step("concurrency", 30, 240, True, "throughput at 16 concurrent streams per model, every engine co-located"),
    Step("auto", 10, 30, True, "time to first token: model auto (routed to the extractor) against the extractor named"),
    Step("switch", 0, 180, True, "profiles with on-demand models: time to first token awake, asleep and after an "
         "eviction, per mechanism (bench switch, one round)"),
    Step("telemetry", 0, 0, True, "temperature, power and throttle reasons sampled during decode and concurrency"),
    Step("stop", 20, 30, True, "Ctrl-C serve run; engines gone"),
    Step("vllm-alone", 90, 360, True, "vllm serve alone on the extractor (full: on every LLM), same engine arguments "
         "and memory: e2e at one client and throughput at 16, against the graph with the model named (targets <= 1.05x "
         "and >= 0.95x) and against the co-located throughput"),
)


def dummy_checkpoint(facts_name: str, out: Path, tokenizer_dir: Path) -> Path:
    """A checkpoint directory vLLM can start with ``load_format: dummy`` (no weights).

    Args:
        facts_name: The model's facts file in configs/models.
        out: Where to write it (replaced).
        tokenizer_dir: A generated tiny checkpoint to take the tokenizer from.
    """
    facts = load_facts(facts_name)
    source = json.loads((tokenizer_dir / "config.json").read_text())
    config: dict[str, Any] = {
        "architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3",
        "hidden_size": facts.hidden_size, "intermediate_size": facts.intermediate_size,
        "num_hidden_layers": facts.num_hidden_layers, "num_attention_heads": facts.num_attention_heads,
        "num_key_value_heads": facts.num_key_value_heads, "head_dim": facts.head_dim,
        "vocab_size": facts.vocab_size, "tie_word_embeddings": facts.tie_word_embeddings,
        "torch_dtype": {2: "bfloat16", 4: "float32"}[facts.dtype_bytes] if not facts.quant_bits else "float16",
        "max_position_embeddings": 40960, "rms_norm_eps": 1e-6, "rope_theta": 1000000.0,
        "hidden_act": "silu", "attention_bias": False, "attention_dropout": 0.0, "use_sliding_window": False,
        "bos_token_id": source["bos_token_id"], "eos_token_id": source["eos_token_id"],
        "pad_token_id": source.get("pad_token_id"),
    }
    if facts.quant_bits:
        config["quantization_config"] = {"quant_method": "awq", "bits": facts.quant_bits,
                                         "group_size": facts.quant_group_size, "zero_point": facts.quant_zero_point,
                                         "version": "gemm"}
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    (out / "config.json").write_text(json.dumps(config, indent=2))
    for name in _TOKENIZER_FILES:
        if (tokenizer_dir / name).exists():
            shutil.copy(tokenizer_dir / name, out / name)
    (out / "DUMMY_WEIGHTS.md").write_text(f"{facts.name}: architecture only; served with load_format: dummy.\n")
    return out


def check_profile(base: str, work: Path, cache_dir: Path) -> tuple[Path, Profile]:
    """Write the check profile: ``base`` with every LLM loading a dummy checkpoint."""
    from serve.kernel.checkpoints import ensure_checkpoint

    raw = yaml.safe_load((CONFIGS_DIR / f"{base}.yaml").read_text())
    profile = load_profile(base)
    for entry, spec in zip(raw["models"], profile.models):
        tokenizer = ensure_checkpoint(cache_dir, "reasoner" if spec.reasoning_parser else "extractor")
        entry["source"] = str(dummy_checkpoint(spec.model_facts, work / "checkpoints" / spec.model_id, tokenizer))
        entry.setdefault("engine_kwargs", {})["load_format"] = "dummy"
    embedder_dir = work / "checkpoints" / profile.embedder.model_id
    if profile.embedder.model_facts:
        embedder_dir.mkdir(parents=True, exist_ok=True)
        facts = load_facts(profile.embedder.model_facts)
        (embedder_dir / "ARCHITECTURE.json").write_text(json.dumps(facts.__dict__, indent=2))
        raw["embedder"]["source"] = str(embedder_dir)  # random weights: materialize_embedder, on the GPU machine
    raw["name"] = f"{base}-check"
    raw["description"] = f"{profile.description} (gpu-check: real-size models, random weights)"
    path = work / f"{base}-check.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path, load_profile(str(path))


def materialize_embedder(directory: Path, tokenizer_dir: Path) -> None:
    """Random weights of the embedder's real architecture, as a sentence-transformers
    directory (the embedder is not a vLLM engine: ``load_format: dummy`` does not reach it)."""
    import torch
    from sentence_transformers import SentenceTransformer, models
    from transformers import AutoModel, Qwen3Config

    facts = json.loads((directory / "ARCHITECTURE.json").read_text())
    config = Qwen3Config(hidden_size=facts["hidden_size"], intermediate_size=facts["intermediate_size"],
                         num_hidden_layers=facts["num_hidden_layers"], num_attention_heads=facts["num_attention_heads"],
                         num_key_value_heads=facts["num_key_value_heads"], head_dim=facts["head_dim"],
                         vocab_size=facts["vocab_size"], tie_word_embeddings=facts["tie_word_embeddings"])
    staging = directory / "transformer"
    AutoModel.from_config(config, torch_dtype=torch.bfloat16).save_pretrained(staging)
    for name in _TOKENIZER_FILES:
        if (tokenizer_dir / name).exists():
            shutil.copy(tokenizer_dir / name, staging / name)
    encoder = models.Transformer(str(staging))
    SentenceTransformer(modules=[encoder, models.Pooling(encoder.get_word_embedding_dimension(), "lasttoken"),
                                 models.Normalize()]).save(str(directory))


def utilization_table(profile: Profile, card_gib: float) -> list[dict[str, Any]]:
    """Each LLM's GiB and the gpu_memory_utilization it gets on a ``card_gib`` card."""
    from deployments.llm.footprint import memory_utilization

    rows = []
    for spec in profile.models:
        budget = spec.resources.num_gpus * profile.gpu_memory_gib
        rows.append({"role": spec.role, "model": spec.model_id, "budget_gib": round(budget, 2),
                     "gpu_memory_utilization": memory_utilization(budget, card_gib)})
    return rows


def vllm_serve_command(profile: Profile, role: str, card_gib: float, port: int) -> list[str]:
    """``vllm serve`` with the engine arguments the graph gives ``role``'s engine, and the
    same GiB of this card: the baseline for the graph's overhead."""
    from deployments.llm.builder import llm_config_dict
    from deployments.llm.footprint import memory_utilization

    spec = profile.llm(role)
    engine = dict(llm_config_dict(spec, device="gpu", model_path=spec.source)["engine_kwargs"])
    engine["gpu_memory_utilization"] = memory_utilization(spec.resources.num_gpus * profile.gpu_memory_gib, card_gib)
    command = ["vllm", "serve", spec.source, "--served-model-name", spec.model_id, "--host", "127.0.0.1",
               "--port", str(port)]
    for key, value in engine.items():
        flag = "--" + key.replace("_", "-")
        if value is True:
            command.append(flag)
        elif value not in (False, None):
            command += [flag, json.dumps(value) if isinstance(value, (dict, list)) else str(value)]
    return command


def bandwidth_ceiling_tps(weight_bytes: int, bandwidth_gbs: float) -> float:
    """Single-stream decode cannot beat reading every weight once per token."""
    return bandwidth_gbs * 1e9 / weight_bytes


def dry_run(args) -> int:
    """Every step that needs no GPU; the plan for the real run."""
    from serve.kernel.settings import load_settings

    work = Path(args.work)
    started = time.perf_counter()
    path, profile = check_profile(args.profile, work, load_settings().cache_dir)
    built = time.perf_counter() - started
    print(f"check profile: {path} ({len(profile.models)} LLMs with load_format: dummy; built in {built:.1f} s)\n")
    print(build_plan(profile).table() + "\n")
    print(build_residency_plan(profile).table() + "\n")
    card = args.card_gib or profile.gpu_memory_gib
    print(f"on a {card:g} GiB card each engine gets its GiB of the profile's {profile.gpu_memory_gib:g}, not its fraction:")
    for row in utilization_table(profile, card):
        print(f"  {row['role']:<10} {row['model']:<28} {row['budget_gib']:>6.2f} GiB  gpu_memory_utilization "
              f"{row['gpu_memory_utilization']}")
    print("\nceiling of single-stream decode at 4.8 TB/s (H200 class), from the weight bytes:")
    for spec in profile.models:
        facts = load_facts(spec.model_facts)
        print(f"  {spec.model_id:<28} {facts.weight_bytes / GIB:6.2f} GiB  {bandwidth_ceiling_tps(facts.weight_bytes, 4800):7.0f} tokens/s")
    print("\nthe baseline, on this card:\n  " + " ".join(vllm_serve_command(profile, "extractor", card, 8001)))
    budget_key = "quick_s" if args.quick else "full_s"
    print(f"\nsteps ({'--quick' if args.quick else 'full'}):")
    for step in STEPS:
        where = "GPU" if step.needs_gpu else "here"
        print(f"  {step.name:<12} {getattr(step, budget_key):>4} s  [{where}]  {step.what}")
    total = sum(getattr(step, budget_key) for step in STEPS)
    print(f"  {'total':<12} {total:>4} s")
    (work / "plan.json").write_text(json.dumps({
        "profile": profile.name, "card_gib": card, "utilization": utilization_table(profile, card),
        "steps": [{"name": s.name, "budget_s": getattr(s, budget_key), "needs_gpu": s.needs_gpu} for s in STEPS],
        "residency_problems": build_residency_plan(profile).problems(), "gpu_problems": build_plan(profile).problems(),
        "baseline": vllm_serve_command(profile, "extractor", card, 8001),
    }, indent=2))
    return 0


def gpu_here() -> Optional[dict[str, Any]]:
    """The first GPU by NVML: name, memory and bandwidth class; None without one."""
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception:  # noqa: BLE001 - no driver: no GPU
        return None
    try:
        handle = pynvml.nvmlDeviceGetHandleByIndex(0)
        bus_bits = pynvml.nvmlDeviceGetMemoryBusWidth(handle)
        mem_mhz = pynvml.nvmlDeviceGetMaxClockInfo(handle, pynvml.NVML_CLOCK_MEM)
        name = pynvml.nvmlDeviceGetName(handle)
        return {"name": name.decode() if isinstance(name, bytes) else name,
                "memory_gib": round(pynvml.nvmlDeviceGetMemoryInfo(handle).total / GIB, 1),
                "bandwidth_gbs": round(bus_bits / 8 * mem_mhz * 2 / 1000, 0)}
    finally:
        pynvml.nvmlShutdown()
