"""The KubeRay manifests in k8s/: valid, current, and faithful to serve_config.yaml."""

from __future__ import annotations

import copy

import jsonschema
import kubernetes_validate
import pytest
import yaml

from serve.k8s import DEFAULT_PROFILE, GPU_PROFILES, render, serve_config_for
from serve.kernel.config import PROJECT_ROOT, load_profile

K8S = PROJECT_ROOT / "k8s"
CRDS = PROJECT_ROOT.parent / "shared" / "k8s" / "crds"
K8S_VERSION = "1.32"


def crd_schema(kind: str) -> dict:
    path = CRDS / f"ray.io_{kind.lower()}s.yaml"
    if not path.exists():
        pytest.skip(f"KubeRay CRD {path} not available")
    crd = yaml.safe_load(path.read_text())
    version = next(v for v in crd["spec"]["versions"] if v["name"] == "v1")
    return version["schema"]["openAPIV3Schema"]


def validate_ray(doc: dict) -> None:
    jsonschema.Draft7Validator(crd_schema(doc["kind"])).validate(doc)


def merge_patch(target, patch):
    """RFC 7386 JSON merge patch: what kustomize applies to a custom resource."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def committed_docs():
    for path in sorted(K8S.rglob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                yield path.relative_to(K8S), doc


def base_rayservice() -> dict:
    return yaml.safe_load((K8S / "base" / "rayservice.yaml").read_text())


def test_every_document_validates():
    seen = set()
    for rel, doc in committed_docs():
        kind = doc["kind"]
        seen.add(kind)
        if kind in ("Kustomization", "Component"):
            continue
        if doc["apiVersion"].startswith("ray.io/"):
            if "patch" in rel.name:
                continue  # patches are validated once applied, below
            validate_ray(doc)
        else:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    assert {"RayService", "PersistentVolumeClaim", "NetworkPolicy", "Kustomization", "Component"} <= seen


@pytest.mark.parametrize("overlay", GPU_PROFILES)
def test_overlays_apply_to_a_valid_rayservice(overlay):
    patch = yaml.safe_load((K8S / "overlays" / overlay / "rayservice-patch.yaml").read_text())
    merged = merge_patch(base_rayservice(), patch)
    validate_ray(merged)
    apps = yaml.safe_load(merged["spec"]["serveConfigV2"])["applications"]
    assert apps[0]["args"]["profile"] == overlay
    cluster = load_profile(overlay).cluster
    # One worker group sized by `cluster.worker_*`, or one per node group sized by the group.
    sizes = ([(g.gpus, g.memory_gib) for g in cluster.node_groups.values()] if cluster.node_groups
             else [(cluster.worker_gpus, cluster.worker_memory_gib)])
    groups = merged["spec"]["rayClusterConfig"]["workerGroupSpecs"]
    assert len(groups) == len(sizes)
    for group, (gpus, memory_gib) in zip(groups, sizes):
        limits = group["template"]["spec"]["containers"][0]["resources"]["limits"]
        assert limits.get("nvidia.com/gpu", 0) == gpus
        assert limits["memory"] == f"{memory_gib}Gi"


def test_gcs_ft_component_applies():
    patch = yaml.safe_load((K8S / "components" / "gcs-ft" / "gcs-ft-patch.yaml").read_text())
    merged = merge_patch(base_rayservice(), patch)
    validate_ray(merged)
    assert merged["spec"]["rayClusterConfig"]["gcsFaultToleranceOptions"]["redisAddress"]


def test_schema_catches_a_broken_rayservice():
    broken = base_rayservice()
    broken["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["replicas"] = "one"
    with pytest.raises(jsonschema.ValidationError):
        validate_ray(broken)


def test_committed_manifests_match_the_renderer(tmp_path):
    files = render(DEFAULT_PROFILE)
    committed = {str(p.relative_to(K8S)) for p in K8S.rglob("*.yaml")}
    assert committed == set(files), "run `python -m serve render-k8s` and commit k8s/"
    for rel, text in files.items():
        assert (K8S / rel).read_text() == text, f"k8s/{rel} is stale: run `python -m serve render-k8s`"


def test_serve_config_v2_deploys_what_serve_config_yaml_does():
    local = yaml.safe_load((PROJECT_ROOT / "serve_config.yaml").read_text())
    for profile, doc in [(DEFAULT_PROFILE, base_rayservice())] + [
        (o, yaml.safe_load((K8S / "overlays" / o / "rayservice-patch.yaml").read_text())) for o in GPU_PROFILES
    ]:
        cluster_apps = yaml.safe_load(doc["spec"]["serveConfigV2"])["applications"]
        assert len(cluster_apps) == len(local["applications"])
        for mine, theirs in zip(local["applications"], cluster_apps):
            assert theirs["name"] == mine["name"]
            assert theirs["import_path"] == mine["import_path"]
            assert theirs["route_prefix"] == mine["route_prefix"]
            assert theirs["args"] == {**mine["args"], "profile": profile}


def test_cluster_is_secure_by_default():
    doc = base_rayservice()
    spec = doc["spec"]
    assert spec["serveService"]["spec"]["type"] == "ClusterIP"
    assert [p["port"] for p in spec["serveService"]["spec"]["ports"]] == [8000]
    assert spec["rayClusterConfig"]["authOptions"]["mode"] == "token"
    head = spec["rayClusterConfig"]["headGroupSpec"]
    assert "serviceType" not in head and "enableIngress" not in head  # dashboard stays in-cluster
    for pod in [head["template"]["spec"]] + [g["template"]["spec"] for g in spec["rayClusterConfig"]["workerGroupSpecs"]]:
        # Secrets come from the Secret as read-only files, never from the environment.
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert volumes["secrets"]["secret"] == {"secretName": "llm-graph-secrets", "defaultMode": 0o400}
        assert pod["automountServiceAccountToken"] is False
        assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        for container in pod["containers"]:
            env = {e["name"]: e for e in container["env"]}
            assert not [e for e in container["env"] if "valueFrom" in e], "no secret in the environment"
            assert env["LLMGRAPH_API_KEYS_FILE"]["value"].startswith("/etc/llm-graph/secrets/")
            assert {"name": "secrets", "mountPath": "/etc/llm-graph/secrets", "readOnly": True} in container["volumeMounts"]
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False and context["capabilities"] == {"drop": ["ALL"]}


def test_ray_ports_are_closed_to_all_but_the_cluster_and_the_operator():
    [policy] = [doc for _, doc in committed_docs() if doc["kind"] == "NetworkPolicy"
                and doc["metadata"]["name"] == "llm-graph"]
    labels = base_rayservice()["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["metadata"]["labels"]
    assert policy["spec"]["podSelector"]["matchLabels"] == labels
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
    rules = policy["spec"]["ingress"]
    open_to_namespace = [r for r in rules if r["from"] == [{"podSelector": {}}]]
    assert [p["port"] for r in open_to_namespace for p in r["ports"]] == [8000]
    for rule in rules:
        if "ports" not in rule:  # every port: only from the cluster's own pods
            assert rule["from"] == [{"podSelector": {"matchLabels": labels}}]
    [operator] = [peer for r in rules for peer in r["from"] if "namespaceSelector" in peer]
    assert operator["namespaceSelector"] == {"matchLabels": {"kubernetes.io/metadata.name": "kuberay-system"}}, \
        "the operator's namespace by its name, which no one can label their way into"


def test_egress_reaches_the_cluster_dns_and_public_https_only():
    [policy] = [doc for _, doc in committed_docs() if doc["kind"] == "NetworkPolicy"
                and doc["metadata"]["name"] == "llm-graph"]
    labels = base_rayservice()["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["metadata"]["labels"]
    egress = policy["spec"]["egress"]
    assert {"to": [{"podSelector": {"matchLabels": labels}}]} in egress
    [public] = [rule for rule in egress if "ipBlock" in rule["to"][0]]
    assert public["ports"] == [{"port": 443, "protocol": "TCP"}]
    assert "169.254.0.0/16" in public["to"][0]["ipBlock"]["except"], "no cloud metadata service"
    assert "10.0.0.0/8" in public["to"][0]["ipBlock"]["except"], "no internal service by address"
    ports = {(p["port"], p["protocol"]) for rule in egress for p in rule.get("ports", [])}
    assert ports == {(53, "UDP"), (53, "TCP"), (443, "TCP")}


def test_serve_config_for_changes_only_cluster_settings(tmp_path):
    cfg = serve_config_for("gpu-80gb", PROJECT_ROOT / "serve_config.yaml")
    assert cfg["http_options"] == {"host": "0.0.0.0", "port": 8000}
    assert cfg["applications"][0]["args"]["profile"] == "gpu-80gb"
    assert yaml.safe_load((PROJECT_ROOT / "serve_config.yaml").read_text())["applications"][0]["args"]["profile"] == "cpu"
