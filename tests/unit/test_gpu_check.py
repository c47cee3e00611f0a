"""``python -m serve gpu-check --dry-run``: everything the GPU check can do without a GPU."""

from __future__ import annotations

import json
import subprocess
import sys

from serve.kernel.config import PROJECT_ROOT, load_profile


def test_the_dry_run_builds_checkpoints_the_engine_can_read_and_plans_for_the_card(tmp_path):
    out = subprocess.run([sys.executable, "-m", "serve", "gpu-check", "--dry-run", "--quick", "--card-gib", "141",
                          "--work", str(tmp_path)], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "GPU memory plan for profile 'gpu-16gb-check'" in out.stdout and "verdict: fits" in out.stdout
    plan = json.loads((tmp_path / "plan.json").read_text())
    assert plan["gpu_problems"] == [] and plan["residency_problems"] == []
    by_role = {row["role"]: row for row in plan["utilization"]}
    assert by_role["extractor"]["budget_gib"] == 8.0
    assert by_role["extractor"]["gpu_memory_utilization"] == round(8 / 141, 4), "16 GiB of the 141, not half the card"
    assert sum(step["budget_s"] for step in plan["steps"]) <= 8 * 60, "--quick fits in 8 minutes"

    baseline = " ".join(plan["baseline"])
    for flag in ("--load-format dummy", "--gpu-memory-utilization 0.0567", "--max-model-len 8192", "--max-num-seqs 16",
                 "--quantization awq_marlin", "--served-model-name qwen3-8b-awq"):
        assert flag in baseline, f"vllm serve alone gets the graph's engine arguments: {flag}"

    profile = load_profile(str(tmp_path / "gpu-16gb-check.yaml"))
    for spec in profile.models:
        assert spec.engine_kwargs["load_format"] == "dummy"
        assert spec.model_facts and spec.resources.num_gpus, "the plan is the real profile's"


def test_a_dummy_checkpoint_has_the_published_architecture_and_a_tokenizer_that_fits(tmp_path):
    from transformers import AutoConfig, AutoTokenizer

    from serve.gpu_check import check_profile
    from serve.kernel.planner import load_facts
    from serve.kernel.settings import load_settings

    _, profile = check_profile("gpu-16gb", tmp_path, load_settings().cache_dir)
    for spec in profile.models:
        facts = load_facts(spec.model_facts)
        config = AutoConfig.from_pretrained(spec.source)
        assert config.model_type == "qwen3" and config.num_hidden_layers == facts.num_hidden_layers
        assert config.vocab_size == facts.vocab_size and config.hidden_size == facts.hidden_size
        assert config.quantization_config["quant_method"] == "awq" and config.quantization_config["bits"] == 4
        tokenizer = AutoTokenizer.from_pretrained(spec.source)
        ids = tokenizer.apply_chat_template([{"role": "user", "content": "Hallo, wie geht's?"}], tokenize=True,
                                            add_generation_prompt=True)
        ids = ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids
        assert ids and max(ids) < facts.vocab_size


def test_without_a_gpu_the_real_run_says_so():
    out = subprocess.run([sys.executable, "-m", "serve", "gpu-check"], cwd=PROJECT_ROOT, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 2 and "no NVIDIA GPU here" in out.stdout
