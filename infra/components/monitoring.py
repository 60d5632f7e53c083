"""kube-prometheus-stack, monitors for every part of the platform, alert rules and dashboards."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s

from infra.alerts import rule_groups
from infra.components import kafka, postgres, rabbitmq
from infra.components.base import PlatformComponent
from infra.components.upstream import PROMETHEUS_APIS, HelmRelease, Operator
from infra.config import Exposure
from infra.credentials import Credentials
from infra.dashboards import overview, service_page
from tide.topology import Catalog

PROMETHEUS_COMMUNITY = "https://prometheus-community.github.io/helm-charts"
RELEASE = "tide-monitoring"

# Pulumi's Helm Chart v4 renders without hooks (pulumi-kubernetes
# provider/pkg/provider/helm/v4/chart.go sets DisableHooks). In kube-prometheus-stack
# 77.6.2 only the hook Job in admission-webhooks/job-patch creates the
# `<fullname>-admission` TLS Secret that the operator Deployment mounts when
# `tls.enabled` (templates/prometheus-operator/deployment.yaml), and patches the
# webhooks' caBundle. Without the hooks the operator never starts, so: no operator
# TLS and no admission webhooks (they only validate PrometheusRule syntax, which
# promtool checks in Tide's tests). KEDA, CloudNativePG and Strimzi charts have no
# hooks; their operators make their own certificates.
OPERATOR_WITHOUT_HOOKS = {
    "tls": {"enabled": False},
    "admissionWebhooks": {
        "enabled": False,
        "patch": {"enabled": False},
        "certManager": {"enabled": False},
    },
}


# Prometheus selects monitors and rules from every namespace, not only the chart's: with
# `*NilUsesHelmValues: false` and no selector given, the chart renders each selector as
# `{}` (templates/prometheus/prometheus.yaml), which prometheus-operator reads as "all".
PROMETHEUS_SPEC = {
    "serviceMonitorSelectorNilUsesHelmValues": False,
    "podMonitorSelectorNilUsesHelmValues": False,
    "ruleSelectorNilUsesHelmValues": False,
    "retention": "3d",
}


# The chart scrapes these control-plane components and alerts when they are absent
# (KubeSchedulerDown, KubeControllerManagerDown, KubeProxyDown, the etcd group); each of
# its rule files is rendered only when the component's `enabled` value is true. kind
# (kubeadm's defaults) binds them to 127.0.0.1 inside the node, where Prometheus cannot
# reach them, so on kind those alerts would fire for ever on a healthy cluster.
CONTROL_PLANE_COMPONENTS = ("kubeScheduler", "kubeControllerManager", "kubeEtcd", "kubeProxy")


@dataclass(frozen=True, kw_only=True)
class MonitoringArgs:
    namespace: str
    data_namespace: str
    catalog: Catalog
    version: str
    exposure: Exposure
    node_exporter: bool
    # False on kind: see CONTROL_PLANE_COMPONENTS.
    control_plane_metrics: bool
    credentials: Credentials
    # The check of the cluster's own prometheus-operator CRDs (`tide:operators: external`):
    # its Prometheus and Grafana pick up Tide's monitors, rules and dashboards, and Tide
    # installs no kube-prometheus-stack. None: Tide installs it.
    existing: Operator | None = None


class Monitoring(PlatformComponent):
    """Prometheus picks up every ServiceMonitor, PodMonitor and PrometheusRule in the cluster."""

    stack: Operator
    # None when the cluster's own Grafana is used.
    grafana_password: pulumi.Output[str] | None

    def __init__(
        self, name: str, args: MonitoringArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("tide:monitoring:Monitoring", name, opts)
        child = self.child()
        install = args.existing is None
        self.grafana_password = args.credentials.password("grafana/admin") if install else None

        def exposed(node_port: int | None) -> dict[str, object]:
            # Grafana and Prometheus reach the host only on kind (NodePorts kind maps to
            # localhost). Prometheus has no login: on a cloud stack neither gets a
            # LoadBalancer; reach them with kubectl port-forward.
            if node_port is None or args.exposure.service_type != "NodePort":
                return {"type": "ClusterIP"}
            return {"type": "NodePort", "nodePort": node_port}

        stack = HelmRelease(
            name=RELEASE,
            chart="kube-prometheus-stack",
            version=args.version,
            namespace=args.namespace,
            repository=PROMETHEUS_COMMUNITY,
            values={
                "fullnameOverride": RELEASE,
                "prometheusOperator": OPERATOR_WITHOUT_HOOKS,
                "nodeExporter": {"enabled": args.node_exporter},
                **{
                    component: {"enabled": args.control_plane_metrics}
                    for component in CONTROL_PLANE_COMPONENTS
                },
                "prometheus": {
                    "service": exposed(args.exposure.prometheus_node_port),
                    "prometheusSpec": PROMETHEUS_SPEC,
                },
                "grafana": {
                    "adminPassword": self.grafana_password,
                    "service": exposed(args.exposure.grafana_node_port),
                    "sidecar": {
                        "dashboards": {
                            "enabled": True,
                            "label": "grafana_dashboard",
                            "searchNamespace": "ALL",
                        }
                    },
                },
            },
        )

        self.stack = args.existing or Operator(
            RELEASE, apis=PROMETHEUS_APIS, install=stack, opts=child
        )
        after_crds = self.child(depends_on=[self.stack])
        _pod_monitor(
            "kafka",
            args.data_namespace,
            {"strimzi.io/kind": "Kafka", "strimzi.io/broker-role": "true"},
            "tcp-prometheus",
            after_crds,
        )
        _pod_monitor(
            "kafka-exporter",
            args.data_namespace,
            # Strimzi names its Kafka Exporter `<cluster>-kafka-exporter`.
            {"strimzi.io/name": f"{kafka.CLUSTER_NAME}-kafka-exporter"},
            "tcp-prometheus",
            after_crds,
        )
        _pod_monitor(
            "rabbitmq",
            args.data_namespace,
            {"app.kubernetes.io/name": rabbitmq.CLUSTER_NAME},
            "prometheus",
            after_crds,
        )
        _pod_monitor(
            "postgres",
            args.data_namespace,
            {"cnpg.io/cluster": postgres.CLUSTER_NAME},
            "metrics",
            after_crds,
        )
        k8s.apiextensions.CustomResource(
            f"{name}-rules",
            api_version="monitoring.coreos.com/v1",
            kind="PrometheusRule",
            metadata=k8s.meta.v1.ObjectMetaArgs(name="tide-alerts", namespace=args.namespace),
            spec={"groups": rule_groups(args.catalog)},
            opts=after_crds,
        )
        dashboards = {"overview": overview(args.catalog)} | {
            s.name: service_page(args.catalog, s.name) for s in args.catalog.services
        }
        for key, dashboard in dashboards.items():
            k8s.core.v1.ConfigMap(
                f"{name}-dashboard-{key}",
                metadata=k8s.meta.v1.ObjectMetaArgs(
                    name=f"tide-dashboard-{key}",
                    namespace=args.namespace,
                    labels={"grafana_dashboard": "1"},
                ),
                data={f"tide-{key}.json": json.dumps(dashboard, indent=1)},
                opts=child,
            )
        self.register_outputs({})


def _pod_monitor(
    name: str, namespace: str, selector: dict[str, str], port: str, opts: pulumi.ResourceOptions
) -> k8s.apiextensions.CustomResource:
    return k8s.apiextensions.CustomResource(
        f"podmonitor-{name}",
        api_version="monitoring.coreos.com/v1",
        kind="PodMonitor",
        metadata=k8s.meta.v1.ObjectMetaArgs(name=f"tide-{name}", namespace=namespace),
        spec={
            "selector": {"matchLabels": selector},
            "podMetricsEndpoints": [{"port": port, "path": "/metrics", "interval": "15s"}],
        },
        opts=opts,
    )
