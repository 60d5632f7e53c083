"""What `pulumi up` does with a stack's objects, step for step, against one API server."""

from __future__ import annotations

from tests.deploy.apiserver import ApiServer, Rejection, pod_from_template
from tests.deploy.stack import Rendered, config_for, render_stack

STACKS = ("kind", "cloud")
# The image tag a first `pulumi up` deploys, and the one an upgrade moves to.
FIRST_TAG = "deploy-1"
NEXT_TAG = "deploy-2"


def prefix_of(stack: str) -> str:
    """Fresh namespaces per stack, so both live side by side on one API server."""
    return f"{stack}-deploy"


def first_render(stack: str) -> Rendered:
    prefix = prefix_of(stack)
    return render_stack(stack, config_for(stack, prefix=prefix, image_tag=FIRST_TAG), prefix)


def deploy(api: ApiServer, stack: Rendered) -> list[Rejection]:
    """Namespaces first (nothing can be dry-run into a namespace that does not exist, so
    Pulumi's preview skips those too), then a dry run of everything, everything for real,
    and the Pods the controllers would make from each workload: Pod Security judges
    Pods, not their templates."""
    for document in stack.objects:
        if document["kind"] == "Namespace":
            if (rejection := api.apply(document)) is not None:
                return [rejection]
            # The controller-manager's service-account controller would create it.
            api.apply(
                {
                    "apiVersion": "v1",
                    "kind": "ServiceAccount",
                    "metadata": {"name": "default", "namespace": document["metadata"]["name"]},
                }
            )
    rejected = api.apply_all(stack.objects, dry_run=True)
    if rejected:
        return rejected
    rejected = api.apply_all(stack.objects)
    for document in stack.objects:
        pod = pod_from_template(document)
        if pod is not None and (rejection := api.create(pod, dry_run=True)) is not None:
            rejected.append(rejection)
    return rejected
