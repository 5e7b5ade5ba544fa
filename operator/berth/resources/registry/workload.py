"""The registry workload: its ServiceAccount, config, storage, Service, Deployment and
what guards and exposes it."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from berth.api.registry import SINGLE_NODE_ACCESS_MODES, RegistrySpec, RolloutStrategy
from berth.constants import ANNOTATION_CONFIG_CHECKSUM
from berth.resources.registry.config import checksum, config_yaml, notification_endpoints
from berth.resources.registry.inputs import RegistryInputs, RegistryView
from berth.resources.registry.names import (
    AUTH_DIR,
    AUTH_FILES,
    CONFIG_DIR,
    DATA_PATH,
    DEBUG_PORT,
    NON_OPENSHIFT_UID,
    REGISTRY_PORT,
    TLS_DIR,
)
from berth.resources.render import labels, render, selector_labels


def _render(template: str, registry: RegistryView, component: str, **values: Any) -> dict[str, Any]:
    return render(
        template,
        names=registry.names,
        namespace=registry.namespace,
        labels=labels(registry.names.registry, component),
        **values,
    )


def _selector(registry: RegistryView) -> dict[str, str]:
    return selector_labels(registry.names.registry, "registry")


def service_account(inputs: RegistryInputs) -> dict[str, Any]:
    return _render("registry/serviceaccount.yaml.j2", inputs, "registry")


def config_map(inputs: RegistryInputs) -> dict[str, Any]:
    yaml_text = config_yaml(inputs)
    return _render("registry/configmap.yaml.j2", inputs, "registry", config_yaml=yaml_text)


def claim(inputs: RegistryInputs) -> dict[str, Any]:
    pvc = inputs.spec.storage.pvc if inputs.spec.storage else None
    assert pvc is not None
    return _render("registry/pvc.yaml.j2", inputs, "storage", pvc=pvc.model_dump(mode="json"))


def service(registry: RegistryView) -> dict[str, Any]:
    """The Service: it needs no material, so it can be created before the certificate
    that must name its cluster IP."""
    return _render(
        "registry/service.yaml.j2",
        registry,
        "registry",
        selector=_selector(registry),
        service=registry.spec.expose.service.model_dump(mode="json"),
    )


def rollout_strategy(spec: RegistrySpec) -> RolloutStrategy:
    """Recreate where two Pods cannot share the volume, RollingUpdate otherwise."""
    if spec.rollout_strategy is not None:
        return spec.rollout_strategy
    storage = spec.storage
    single_node = storage is not None and (
        storage.empty_dir is not None
        or (
            storage.pvc is not None
            and bool(SINGLE_NODE_ACCESS_MODES.intersection(storage.pvc.access_modes))
        )
    )
    return RolloutStrategy.RECREATE if single_node else RolloutStrategy.ROLLING_UPDATE


def _data_volume(inputs: RegistryInputs) -> dict[str, Any]:
    storage = inputs.spec.storage
    assert storage is not None
    if storage.pvc is not None:
        claim_name = storage.pvc.existing_claim or inputs.names.pvc
        return {"persistentVolumeClaim": {"claimName": claim_name}}
    if storage.empty_dir is not None:
        limit = storage.empty_dir.size_limit
        return {"emptyDir": {"sizeLimit": limit} if limit else {}}
    return {"emptyDir": {}}  # s3: nothing on local disk but scratch


def _pod_annotations(inputs: RegistryInputs) -> dict[str, str]:
    """The user's annotations and the checksum of what the Pods read once, at start."""
    material = inputs.material
    annotations = dict(inputs.spec.pod_annotations or {})
    annotations[ANNOTATION_CONFIG_CHECKSUM] = checksum(
        config_yaml(inputs),
        material.http_secret,
        material.htpasswd,
        material.token_ca_pem,
        material.serving.cert_pem if material.serving else None,
        notification_endpoints(inputs),
    )
    return annotations


def deployment(inputs: RegistryInputs) -> dict[str, Any]:
    spec = inputs.spec
    storage = spec.storage
    assert storage is not None
    s3_secret = storage.s3.secret_ref.name if storage.s3 and storage.s3.secret_ref else None
    return _render(
        "registry/deployment.yaml.j2",
        inputs,
        "registry",
        selector=_selector(inputs),
        replicas=spec.replicas,
        strategy=rollout_strategy(spec).value,
        image=spec.image,
        pod_annotations=_pod_annotations(inputs),
        run_as_uid=None if inputs.openshift else NON_OPENSHIFT_UID,
        tls_secret=inputs.tls_secret_name,
        auth_file=AUTH_FILES.get(spec.auth.mode),
        data_volume=_data_volume(inputs),
        s3_secret=s3_secret,
        notifications=notification_endpoints(inputs) is not None,
        registry_port=REGISTRY_PORT,
        debug_port=DEBUG_PORT,
        data_path=DATA_PATH,
        config_dir=CONFIG_DIR,
        tls_dir=TLS_DIR,
        auth_dir=AUTH_DIR,
        resources=spec.resources or {},
        node_selector=spec.node_selector or {},
        tolerations=spec.tolerations or [],
        affinity=spec.affinity or {},
        priority_class_name=spec.priority_class_name,
    )


def disruption_budget(inputs: RegistryInputs) -> dict[str, Any]:
    return _render("registry/pdb.yaml.j2", inputs, "registry", selector=_selector(inputs))


def network_policy(inputs: RegistryInputs) -> dict[str, Any]:
    return _render(
        "registry/networkpolicy.yaml.j2",
        inputs,
        "registry",
        selector=_selector(inputs),
        registry_port=REGISTRY_PORT,
        debug_port=DEBUG_PORT,
    )


def route(inputs: RegistryInputs) -> dict[str, Any]:
    return _exposure(inputs, "route", inputs.spec.expose.route)


def ingress(inputs: RegistryInputs) -> dict[str, Any]:
    return _exposure(inputs, "ingress", inputs.spec.expose.ingress)


def _exposure(inputs: RegistryInputs, kind: str, spec: BaseModel | None) -> dict[str, Any]:
    """A Route or an Ingress: the template of that name, given the spec's section."""
    assert spec is not None, f"wanted only with spec.expose.{kind}"
    values = {kind: spec.model_dump(mode="json"), "tls": inputs.tls_enabled}
    return _render(f"registry/{kind}.yaml.j2", inputs, "registry", **values)
