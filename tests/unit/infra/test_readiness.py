"""`make up`'s verdicts on what is not Ready yet, over objects shaped as the API returns them."""

from __future__ import annotations

from infra.readiness import condition_pending, workload_pending


def _meta(name: str) -> dict[str, str]:
    return {"name": name, "namespace": "tide-apps"}


def test_a_deployment_short_of_available_replicas_is_pending_with_the_count() -> None:
    deployment = {"metadata": _meta("recommendation"), "spec": {"replicas": 2}, "status": {}}
    pending = workload_pending("Deployment", deployment)
    assert pending is not None
    assert str(pending) == "Deployment tide-apps/recommendation: 0/2 replicas ready"
    deployment["status"] = {"availableReplicas": 2}
    assert workload_pending("Deployment", deployment) is None


def test_a_group_scaled_to_zero_by_keda_is_ready() -> None:
    badges = {"metadata": _meta("badges"), "spec": {"replicas": 0}, "status": {}}
    assert workload_pending("Deployment", badges) is None


def test_a_statefulset_counts_ready_not_available_replicas() -> None:
    sts = {"metadata": _meta("rabbitmq-server"), "spec": {"replicas": 1}, "status": {}}
    assert workload_pending("StatefulSet", sts) is not None
    sts["status"] = {"readyReplicas": 1}
    assert workload_pending("StatefulSet", sts) is None


def test_a_custom_resource_needs_its_condition_true_and_says_why_not() -> None:
    kafka = {"metadata": _meta("tide"), "status": {}}
    assert str(condition_pending("Kafka", "Ready", kafka)).endswith("no Ready condition yet")
    kafka["status"] = {
        "conditions": [
            {"type": "Warning", "status": "True", "message": "ignored"},
            {"type": "Ready", "status": "False", "message": "Exceeded timeout of 300000ms"},
        ]
    }
    assert str(condition_pending("Kafka", "Ready", kafka)) == (
        "Kafka tide-apps/tide: Ready: Exceeded timeout of 300000ms"
    )
    kafka["status"]["conditions"][1]["status"] = "True"
    assert condition_pending("Kafka", "Ready", kafka) is None
