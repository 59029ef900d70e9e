"""Structural JSON schemas of the custom resources deploy/ uses, written for these tests from the
fields of the Gateway API Inference Extension's InferencePool (inference.networking.k8s.io/v1) and
Gateway API's HTTPRoute (gateway.networking.k8s.io/v1): required fields, types, enums and ranges
as those CRDs declare them. Unknown fields are refused (as the API server prunes them). The CRDs'
CEL rules (e.g. unique port numbers) are not expressed here, except where a JSON schema can."""

from __future__ import annotations

_NAME = {"type": "string", "minLength": 1, "maxLength": 253}
_PORT_NUMBER = {"type": "integer", "minimum": 1, "maximum": 65535}
_LABEL_VALUE = {"type": "string", "maxLength": 63, "pattern": r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"}
_METADATA = {"type": "object", "required": ["name"],
             "properties": {"name": _NAME, "namespace": _NAME, "labels": {"type": "object"},
                            "annotations": {"type": "object"}}}


def _object(properties: dict, required: list[str]) -> dict:
    return {"type": "object", "properties": properties, "required": required, "additionalProperties": False}


INFERENCE_POOL_V1 = _object({
    "apiVersion": {"const": "inference.networking.k8s.io/v1"},
    "kind": {"const": "InferencePool"},
    "metadata": _METADATA,
    "spec": _object({
        "selector": _object({"matchLabels": {"type": "object", "minProperties": 1, "maxProperties": 64,
                                             "additionalProperties": _LABEL_VALUE}}, ["matchLabels"]),
        "targetPorts": {"type": "array", "minItems": 1, "maxItems": 8, "uniqueItems": True,
                        "items": _object({"number": _PORT_NUMBER}, ["number"])},
        "appProtocol": {"enum": ["http", "kubernetes.io/h2c"]},
        "endpointPickerRef": _object({
            "group": {"type": "string", "maxLength": 253},
            "kind": {"type": "string", "minLength": 1, "maxLength": 63},
            "name": _NAME,
            "port": _object({"number": _PORT_NUMBER}, ["number"]),
            "failureMode": {"enum": ["FailOpen", "FailClose"]},
        }, ["name"]),
    }, ["selector", "targetPorts"]),
}, ["apiVersion", "kind", "metadata", "spec"])

_PARENT_REF = _object({"group": {"type": "string"}, "kind": {"type": "string"}, "namespace": _NAME, "name": _NAME,
                       "sectionName": _NAME, "port": _PORT_NUMBER}, ["name"])
_BACKEND_REF = _object({"group": {"type": "string"}, "kind": {"type": "string"}, "name": _NAME, "namespace": _NAME,
                        "port": _PORT_NUMBER, "weight": {"type": "integer", "minimum": 0, "maximum": 1000000}},
                       ["name"])
_PATH_MATCH = _object({"type": {"enum": ["Exact", "PathPrefix", "RegularExpression"]},
                       "value": {"type": "string", "maxLength": 1024}}, [])

HTTP_ROUTE_V1 = _object({
    "apiVersion": {"const": "gateway.networking.k8s.io/v1"},
    "kind": {"const": "HTTPRoute"},
    "metadata": _METADATA,
    "spec": _object({
        "parentRefs": {"type": "array", "maxItems": 32, "items": _PARENT_REF},
        "hostnames": {"type": "array", "maxItems": 16, "items": {"type": "string"}},
        "rules": {"type": "array", "maxItems": 16, "items": _object({
            "matches": {"type": "array", "maxItems": 64, "items": _object({"path": _PATH_MATCH}, [])},
            "backendRefs": {"type": "array", "maxItems": 16, "items": _BACKEND_REF},
        }, [])},
    }, []),
}, ["apiVersion", "kind", "metadata", "spec"])

SCHEMAS = {("inference.networking.k8s.io/v1", "InferencePool"): INFERENCE_POOL_V1,
           ("gateway.networking.k8s.io/v1", "HTTPRoute"): HTTP_ROUTE_V1}
