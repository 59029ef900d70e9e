"""deploy/: every Kubernetes manifest validates offline against the schemas of a fixed Kubernetes
version (kubernetes-validate bundles them), and the pieces agree with each other and with the
server: probes hit endpoints pagedserve serves, selectors match the pods, the HPA metric exists.

Custom resources (InferencePool, HTTPRoute) have no bundled schema: they are checked against the
structural schemas in crd_schemas.py, written from the Gateway API Inference Extension v1 and
Gateway API v1 CRDs (required fields, types, ranges; not the CEL rules).
"""

from __future__ import annotations

import copy
import glob
import os

import jsonschema
import kubernetes_validate
import pytest
import yaml

from tests.deploy.crd_schemas import SCHEMAS

KUBERNETES_VERSION = "1.33.0"  # the schemas every manifest must validate against
DEPLOY = os.path.join(os.path.dirname(__file__), "..", "..", "deploy")


def documents(pattern: str) -> list[tuple[str, dict]]:
    out = []
    for path in sorted(glob.glob(os.path.join(DEPLOY, pattern))):
        with open(path, encoding="utf-8") as f:
            out += [(os.path.basename(path), doc) for doc in yaml.safe_load_all(f) if doc]
    return out


KUBERNETES_DOCS = documents("kubernetes/*.yaml")
LLM_D_DOCS = documents("llm-d/inferencepool.yaml")


def by_kind(kind: str, name: str | None = None) -> dict:
    (doc,) = [d for _, d in KUBERNETES_DOCS + LLM_D_DOCS
              if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    return doc


def validate_builtin(doc: dict) -> None:
    kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_the_deploy_folder_has_every_piece():
    kinds = sorted(d["kind"] for _, d in KUBERNETES_DOCS + LLM_D_DOCS)
    for kind in ("Deployment", "Service", "HorizontalPodAutoscaler", "PersistentVolumeClaim", "InferencePool",
                 "HTTPRoute", "Role", "RoleBinding", "ServiceAccount"):
        assert kind in kinds


@pytest.mark.parametrize("name, doc", KUBERNETES_DOCS, ids=[f"{n}:{d['kind']}/{d['metadata']['name']}"
                                                             for n, d in KUBERNETES_DOCS])
def test_kubernetes_manifest_validates(name, doc):
    validate_builtin(doc)


@pytest.mark.parametrize("name, doc", LLM_D_DOCS, ids=[f"{n}:{d['kind']}" for n, d in LLM_D_DOCS])
def test_custom_resource_validates_against_its_structural_schema(name, doc):
    jsonschema.validate(doc, SCHEMAS[(doc["apiVersion"], doc["kind"])])


@pytest.mark.parametrize("break_it", [
    lambda d: d["spec"]["template"]["spec"]["containers"][0].__setitem__("ports", "8000"),
    lambda d: d["spec"]["template"]["spec"]["containers"][0]["readinessProbe"].__setitem__("periodSeconds", "often"),
    lambda d: d["spec"].__setitem__("replicas", "two"),
    lambda d: d["spec"]["template"]["spec"]["containers"][0].__setitem__("imagePullPolicy2", "Always"),
])
def test_the_validator_rejects_a_broken_deployment(break_it):
    doc = copy.deepcopy(by_kind("Deployment", "pagedserve"))
    break_it(doc)
    with pytest.raises(kubernetes_validate.ValidationError):
        validate_builtin(doc)


@pytest.mark.parametrize("break_it", [
    lambda d: d["spec"].pop("targetPorts"),
    lambda d: d["spec"]["targetPorts"][0].__setitem__("number", 70000),
    lambda d: d["spec"]["selector"].__setitem__("matchLabels", {}),
    lambda d: d["spec"]["endpointPickerRef"].pop("name"),
])
def test_the_structural_schema_rejects_a_broken_inference_pool(break_it):
    doc = copy.deepcopy(by_kind("InferencePool"))
    break_it(doc)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(doc, SCHEMAS[(doc["apiVersion"], doc["kind"])])


def replica_container() -> dict:
    return by_kind("Deployment", "pagedserve")["spec"]["template"]["spec"]["containers"][0]


def test_replica_probes_resources_and_model_volume():
    pod = by_kind("Deployment", "pagedserve")["spec"]["template"]["spec"]
    c = replica_container()
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert c["readinessProbe"]["httpGet"]["path"] == "/health" and c["startupProbe"]["httpGet"]["path"] == "/health"
    assert c["livenessProbe"]["httpGet"]["path"] == "/metrics"  # answers while draining, unlike /health
    assert c["readinessProbe"]["httpGet"]["port"] == "http" and ports["http"] == 8000
    assert f"--http-port={ports['http']}" in c["args"] and "--http-host=0.0.0.0" in c["args"]
    assert c["resources"]["requests"]["cpu"] == "2" and "--threads=2" in c["args"]
    model_arg = next(a for a in c["args"] if a.startswith("--model="))
    mount = next(m for m in c["volumeMounts"] if m["name"] == "models")
    assert model_arg.split("=", 1)[1].startswith(mount["mountPath"] + "/") and mount["readOnly"]
    volume = next(v for v in pod["volumes"] if v["name"] == "models")
    assert volume["persistentVolumeClaim"]["claimName"] == by_kind("PersistentVolumeClaim")["metadata"]["name"]
    grace = next(a for a in c["args"] if a.startswith("--grace-seconds="))
    assert pod["terminationGracePeriodSeconds"] > float(grace.split("=")[1])


def test_the_replica_args_are_accepted_by_pagedserve_serve():
    from pagedserve.cli.main import build_parser

    ns = build_parser().parse_args(replica_container()["args"])
    assert ns.command == "serve" and ns.http_port == 8000 and ns.threads == 2


def test_selectors_match_the_pods():
    pod_labels = by_kind("Deployment", "pagedserve")["spec"]["template"]["metadata"]["labels"]
    for selector in (by_kind("Service", "pagedserve")["spec"]["selector"],
                     by_kind("InferencePool")["spec"]["selector"]["matchLabels"]):
        assert selector.items() <= pod_labels.items()
    smg_args = by_kind("Deployment", "smg")["spec"]["template"]["spec"]["containers"][0]["args"]
    key, value = smg_args[smg_args.index("--selector") + 1].split("=")
    assert pod_labels[key] == value
    assert "--service-discovery-port=8000" in smg_args
    assert by_kind("InferencePool")["spec"]["targetPorts"] == [{"number": 8000}]


def test_hpa_scales_the_replicas_on_the_queue_depth_metric():
    hpa = by_kind("HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"]["name"] == "pagedserve"
    (metric,) = hpa["spec"]["metrics"]
    assert metric["type"] == "Pods" and metric["pods"]["metric"]["name"] == "pagedserve_requests_waiting"
    rules = yaml.safe_load(by_kind("ConfigMap")["data"]["config.yaml"])["rules"]
    assert any(r["name"]["as"] == "pagedserve_requests_waiting" for r in rules)


def test_the_gateway_args_are_what_the_pinned_smg_parses():
    from smg.launch_router import parse_router_args

    container = by_kind("Deployment", "smg")["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["smg"] and container["args"][0] == "launch"
    args = parse_router_args([a.replace("$(POD_NAMESPACE)", "pagedserve") for a in container["args"][1:]])
    assert args.service_discovery and args.selector == {"app": "pagedserve"}
    assert args.service_discovery_port == 8000 and args.service_discovery_namespace == "pagedserve"
    assert args.policy == "cache_aware" and args.port == 8080 and args.prometheus_port == 29000
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert (ports["http"], ports["metrics"]) == (args.port, args.prometheus_port)
