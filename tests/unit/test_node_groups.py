"""Node groups: where a profile's replicas run on a cluster, one memory budget per node,
and the KubeRay worker group each group becomes."""

from __future__ import annotations

import pytest
import yaml

from deployments.llm.builder import llm_config_dict
from deployments.residency.ledger import CannotFit, Entry, Ledger
from serve.k8s import POSTGRES_SECRET_KEY, SECRETS_PATH, render
from serve.kernel.config import ProfileError, load_profile
from serve.kernel.planner import build_plans
from serve.kernel.residency_plan import build_residency_plans
from tests.support.graph_nodes import bound_deployments
from tests.support.profiles import llm_entry, profile_variant


def _variant(tmp_path, mutate):
    return profile_variant(tmp_path, "gpu-cluster", mutate)


# ------------------------------------------------------------------ profile
def test_the_cluster_profile_puts_each_tier_on_its_own_node_group():
    profile = load_profile("gpu-cluster")
    assert {spec.role: spec.resources.node_group for spec in profile.models} == {
        "extractor": "light", "reasoner": "reasoning", "heavy": "reasoning"}
    assert profile.collections.backend == profile.batch.backend == "postgres"
    # Every replica of the graph asks for its group's marker and nothing else custom.
    for name, resources in profile.resources_by_deployment().items():
        assert resources.custom() == {f"llmgraph_group_{resources.node_group}": 0.001}, name


def test_a_node_group_the_cluster_does_not_have_is_refused(tmp_path):
    path = _variant(tmp_path, lambda raw: llm_entry(raw, "reasoner")["resources"].update(node_group="gpu_xl"))
    with pytest.raises(ProfileError, match=r"reasoner.resources.node_group: 'gpu_xl' is not in cluster.node_groups"):
        load_profile(path)


def test_a_gpu_share_on_a_node_group_without_a_gpu_is_refused(tmp_path):
    path = _variant(tmp_path, lambda raw: llm_entry(raw, "extractor")["resources"].update(node_group="control"))
    with pytest.raises(ProfileError, match="extractor asks for a GPU on node group 'control', whose nodes have none"):
        load_profile(path)


def test_gpu_fractions_add_up_per_node_not_across_the_cluster(tmp_path):
    # 0.8 + 0.1 on one card and 0.35 (+ the on-demand model's token claim) on another.
    assert load_profile("gpu-cluster")
    path = _variant(tmp_path, lambda raw: raw["embedder"]["resources"].update(num_gpus=0.25))
    with pytest.raises(ProfileError, match="GPU fractions on node group 'light' add up to 1.05"):
        load_profile(path)


def test_each_card_is_planned_on_its_own():
    plans = build_plans(load_profile("gpu-cluster"))
    assert [[row.node for row in plan.rows] for plan in plans] == [["extractor", "embedder"], ["reasoner", "heavy"]]
    assert [plan.gpu_bytes / 2**30 for plan in plans] == [16, 24]
    assert all(plan.problems() == [] for plan in plans)


def test_an_llm_is_placed_with_its_engine_on_its_node_group():
    spec = load_profile("gpu-cluster").llm("heavy")
    bundle = llm_config_dict(spec, device="gpu", model_path=spec.source)["placement_group_config"]["bundles"][0]
    assert bundle["llmgraph_group_reasoning"] == pytest.approx(0.001)
    assert bundle["GPU"] == spec.ray_gpus


# ---------------------------------------------------------------- residency
def test_each_node_group_has_its_own_residency_budget():
    plans = {plan.node_group: plan for plan in build_residency_plans(load_profile("gpu-cluster"))}
    assert set(plans) == {"light", "reasoning"}
    # The light node's card holds the embedder too; the reasoning node's card is the LLMs' alone.
    assert plans["light"].budget_gib == pytest.approx(16 - 0.5 - 0.1 * 16)
    assert plans["reasoning"].budget_gib == pytest.approx(24 - 0.5)
    assert [row.role for row in plans["reasoning"].rows] == ["reasoner", "heavy"]
    assert "node group 'reasoning'" in plans["reasoning"].table()


def test_a_model_too_big_for_its_node_is_refused_though_another_node_has_room(tmp_path):
    def mutate(raw):
        raw["cluster"]["node_groups"]["reasoning"]["llm_budget_gib"] = 20
    with pytest.raises(ProfileError, match=r"qwen3-14b-awq \(heavy\) needs 14.40 GiB awake.*short by 2.80 GiB"):
        load_profile(_variant(tmp_path, mutate))


def _entry(model_id, group, *, on_demand=True, state="asleep", gib=10.0, last_used=0.0):
    return Entry(model_id, model_id, on_demand=on_demand, mechanism="level1", planned_gib=gib, state=state,
                 last_used=last_used, node_group=group)


def test_a_wake_evicts_only_models_on_its_own_node():
    book = Ledger([_entry("a1", "a", state="awake", last_used=1.0), _entry("b1", "b", state="awake", last_used=0.0),
                   _entry("a2", "a")], None, retry_after_s=5, group_budgets={"a": 15.0, "b": 15.0})
    # b1 is the least recently used, but it is on another node: evicting it frees nothing for a2.
    assert [e.model_id for e in book.evictions_for(book.entries["a2"])] == ["a1"]
    assert book.held_gib("a") == 10.0 and book.held_gib("b") == 10.0


def test_a_busy_node_refuses_a_wake_that_another_node_could_not_help():
    book = Ledger([_entry("a1", "a", on_demand=False, state="awake"), _entry("a2", "a"),
                   _entry("b1", "b", state="asleep")], None, retry_after_s=5, group_budgets={"a": 15.0, "b": 40.0})
    with pytest.raises(CannotFit) as refused:
        book.evictions_for(book.entries["a2"])
    assert "budget of node group 'a' of 15.00 GiB is short by 5.00 GiB" in refused.value.message
    assert "b1" not in refused.value.message and refused.value.later is False
    assert book.evictions_for(book.entries["b1"]) == []


# ------------------------------------------------------------------ KubeRay
@pytest.fixture(scope="module")
def cluster_overlay():
    files = render("gpu-16gb")
    return {rel.removeprefix("overlays/gpu-cluster/"): yaml.safe_load(text)
            for rel, text in files.items() if rel.startswith("overlays/gpu-cluster/")}


def test_each_node_group_is_a_worker_group_with_its_resource(cluster_overlay):
    profile = load_profile("gpu-cluster")
    groups = {g["groupName"]: g for g in cluster_overlay["rayservice-patch.yaml"]["spec"]["rayClusterConfig"]["workerGroupSpecs"]}
    assert set(groups) == set(profile.cluster.node_groups)
    for name, spec in profile.cluster.node_groups.items():
        group = groups[name]
        assert group["resources"] == {f"llmgraph_group_{name}": "1000"}
        assert group["replicas"] == group["minReplicas"] == group["maxReplicas"] == spec.replicas
        limits = group["template"]["spec"]["containers"][0]["resources"]["limits"]
        assert limits.get("nvidia.com/gpu", 0) == spec.gpus
        assert limits["memory"] == f"{spec.memory_gib}Gi" and limits["cpu"] == str(spec.cpus)


def test_the_postgres_url_is_read_from_the_mounted_secret(cluster_overlay):
    for group in cluster_overlay["rayservice-patch.yaml"]["spec"]["rayClusterConfig"]["workerGroupSpecs"]:
        container = group["template"]["spec"]["containers"][0]
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert env["LLMGRAPH_POSTGRES_URL_FILE"] == f"{SECRETS_PATH}/{POSTGRES_SECRET_KEY}"
        assert "LLMGRAPH_POSTGRES_URL" not in env and "postgres://" not in yaml.safe_dump(container)
        assert {"name": "secrets", "mountPath": SECRETS_PATH, "readOnly": True} in container["volumeMounts"]
        # Nothing is stored on the pods: no data volume when both stores live in PostgreSQL.
        assert [m["name"] for m in container["volumeMounts"]] == ["model-cache", "secrets"]


def test_the_one_box_profiles_keep_their_state_local():
    base = yaml.safe_load(render("gpu-16gb")["base/rayservice.yaml"])
    (worker,) = base["spec"]["rayClusterConfig"]["workerGroupSpecs"]
    env = {e["name"] for e in worker["template"]["spec"]["containers"][0]["env"]}
    assert "LLMGRAPH_POSTGRES_URL_FILE" not in env and "resources" not in worker


def test_the_model_cache_of_several_nodes_is_a_shared_volume(cluster_overlay):
    assert cluster_overlay["model-cache-pvc-patch.yaml"]["spec"]["accessModes"] == ["ReadWriteMany"]
    patched = [p["target"]["kind"] for p in cluster_overlay["kustomization.yaml"]["patches"]]
    assert patched == ["RayService", "PersistentVolumeClaim"]


def test_the_pods_may_reach_the_database_port_and_nothing_more(cluster_overlay):
    policy = cluster_overlay["postgres-egress.yaml"]
    assert policy["kind"] == "NetworkPolicy" and policy["spec"]["policyTypes"] == ["Egress"]
    assert policy["spec"]["egress"] == [{"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}],
                                         "ports": [{"port": 5432, "protocol": "TCP"}]}]
    assert "postgres-egress.yaml" in cluster_overlay["kustomization.yaml"]["resources"]
    assert not any("postgres" in rel for rel in render("gpu-16gb") if not rel.startswith("overlays/gpu-cluster/"))


# ------------------------------------------------------------------ monitors
class _Monitor:
    """A GpuMonitor handle that answers ``admission`` with ``level`` (or fails)."""

    def __init__(self, level: str, temperature_c: float | None, fail: bool = False) -> None:
        from tests.support.fakes import Method

        self.reading = {"level": level, "temperature_c": temperature_c, "since": 0.0}
        self.fail = fail
        self.admission = Method(self._admission)
        self.check_health = Method(self._admission)

    async def _admission(self):
        if self.fail:
            raise RuntimeError("node gone")
        return dict(self.reading)


def test_admission_follows_the_hottest_gpu_of_the_cluster():
    import asyncio

    from serve.kernel.health import HealthCache

    light, reasoning = _Monitor("normal", 60.0), _Monitor("soft", 86.0)
    health = HealthCache({}, _Monitor("normal", None), node_monitors={"light": light, "reasoning": reasoning})
    asyncio.run(health.refresh())
    assert health.thermal["level"] == "soft" and health.thermal["temperature_c"] == 86.0
    assert health.thermal_by_node["light"]["temperature_c"] == 60.0
    # A node whose monitor stops answering keeps its last level; the others still count.
    reasoning.fail, light.reading = True, {"level": "hard", "temperature_c": 93.0, "since": 0.0}
    asyncio.run(health.refresh())
    assert health.thermal["level"] == "hard" and health.thermal_by_node["reasoning"]["level"] == "soft"


# -------------------------------------------------------------------- graph
def test_the_graph_binds_every_replica_to_its_node_group_and_a_monitor_to_each_gpu_node():
    from serve.app import build_graph

    deployments = bound_deployments(build_graph(load_profile("gpu-cluster")))
    where = {}
    for name, bound in deployments.items():
        bundles = bound._replica_config.placement_group_bundles
        custom = bundles[0] if bundles else bound.ray_actor_options.get("resources", {})
        where[name] = sorted(key.removeprefix("llmgraph_group_") for key in custom if key.startswith("llmgraph_group_"))
    assert where == {
        "Ingress": ["control"], "Router": ["control"], "Extraction": ["control"], "Residency": ["control"],
        "Collections": ["control"], "Batches": ["control"], "GpuMonitor": ["control"],
        "Embedder": ["light"], "Extractor": ["light"], "Reasoner": ["reasoning"], "Heavy": ["reasoning"],
        "GpuMonitor_light": ["light"], "GpuMonitor_reasoning": ["reasoning"],
    }
    assert deployments["Collections"]._replica_config.max_replicas_per_node == 1
