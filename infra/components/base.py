"""The base of Tide's components: children inherit what their component waits for."""

from __future__ import annotations

import pulumi


class PlatformComponent(pulumi.ComponentResource):
    """A ComponentResource whose children also wait on the component's `depends_on`.

    Pulumi does not pass a component's `depends_on` down to its children, so
    a KafkaTopic inside a component that depends on the Kafka cluster could be
    created before the cluster is Ready. `child()` closes that gap.
    """

    def __init__(self, type_: str, name: str, opts: pulumi.ResourceOptions | None) -> None:
        super().__init__(type_, name, None, opts)
        waits_for = opts.depends_on if opts is not None else None
        if waits_for is None:
            self._waits_for: list[pulumi.Input[pulumi.Resource]] = []
        elif isinstance(waits_for, list):
            self._waits_for = list(waits_for)
        else:
            self._waits_for = [waits_for]  # type: ignore[list-item]

    def child(
        self, *, depends_on: list[pulumi.Resource] | None = None, **options: object
    ) -> pulumi.ResourceOptions:
        """Options for a child: parented here, waiting for what the component waits for."""
        return pulumi.ResourceOptions(
            parent=self,
            depends_on=[*self._waits_for, *(depends_on or [])],
            **options,  # type: ignore[arg-type]
        )
