"""Run the Pulumi program under `pulumi.runtime.set_mocks` and record what it declares."""

from __future__ import annotations

import asyncio
import gc
import json
import runpy
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
import yaml
from infra.credentials import SEED_KEY

ROOT = Path(__file__).resolve().parents[3]
# A team's own platform on Tide, with its own Pulumi program around TidePlatform.
SHOP = ROOT / "examples" / "orders"
SHOP_PROGRAM = SHOP / "deploy" / "__main__.py"


@dataclass
class Declared:
    """A resource the program declared: its inputs as the engine saw them, what it waits on."""

    type: str
    name: str
    inputs: dict[str, Any] = field(default_factory=dict)
    depends_on: set[str] = field(default_factory=set)
    parent: tuple[str, str] | None = None
    secret_inputs: set[str] = field(default_factory=set)
    # The id of an existing object the program reads instead of managing it.
    read: str | None = None
    # The inputs as the program wrote them: the engine's copy drops a null (`inputs`).
    props: dict[str, Any] = field(default_factory=dict)

    @property
    def manifest(self) -> dict[str, Any]:
        return self.inputs


@dataclass
class Program:
    stack: str
    resources: list[Declared]

    def of_type(self, suffix: str) -> list[Declared]:
        return [r for r in self.resources if r.type.endswith(suffix)]

    def named(self, type_suffix: str, name: str) -> Declared:
        matches = [r for r in self.of_type(type_suffix) if r.name == name]
        assert len(matches) == 1, f"expected one {type_suffix} named {name}, got {len(matches)}"
        return matches[0]

    def waits_for(self, resource: Declared) -> set[str]:
        """Everything a resource waits on, directly or through its parents' explicit waits."""
        names = set(resource.depends_on)
        by_key = {(r.type, r.name): r for r in self.resources}
        parent = resource.parent
        while parent is not None and parent in by_key:
            names |= by_key[parent].depends_on
            parent = by_key[parent].parent
        return names


# What `make up` would set once with `pulumi config set --secret` (infra.credentials).
TEST_SEED = "unit-test-seed-" + "0" * 32


# The least `tide:auth` a stack may have, for tests that build a config by hand.
KEYS_AUTH = {"mode": "api-keys", "clients": [{"name": "player", "scopes": ["events:write"]}]}


def stack_config(stack: str, project: Path = ROOT) -> dict[str, str]:
    """The tracked stack file's config (Tide's, or `project`'s), plus the credential seed a
    real stack holds."""
    document = yaml.safe_load((project / f"Pulumi.{stack}.yaml").read_text())["config"]
    config = {k: v if isinstance(v, str) else json.dumps(v) for k, v in document.items()}
    return config | {f"tide:{SEED_KEY}": TEST_SEED}


# What a cluster with every upstream operator installed serves, for reads of CRDs.
SERVED_VERSIONS = ("v1", "v1alpha1", "v1beta1", "v1beta2")


class _Mocks(pulumi.runtime.Mocks):
    def __init__(self, resources: dict[tuple[str, str], Declared], served: tuple[str, ...]) -> None:
        self.resources = resources
        self.served = served

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict[str, Any]]:
        declared = self.resources.setdefault((args.typ, args.name), Declared(args.typ, args.name))
        declared.inputs = _plain(dict(args.inputs))
        declared.secret_inputs = {k for k, v in args.inputs.items() if _is_secret(v)}
        declared.read = args.resource_id
        state = dict(args.inputs)
        if args.resource_id is not None and args.typ.endswith(":CustomResourceDefinition"):
            versions = [{"name": v, "served": True} for v in self.served]
            state["spec"] = {"versions": versions}
        return args.resource_id or f"{args.name}-id", state

    def call(self, args: pulumi.runtime.MockCallArgs) -> dict[str, Any]:
        return {}


def run(
    stack: str,
    config: dict[str, str] | None = None,
    *,
    served: tuple[str, ...] = SERVED_VERSIONS,
    main: Path = ROOT / "infra" / "__main__.py",
) -> Program:
    """Run the program `main` (Tide's own by default) for `stack` (or explicit config) and
    return what it declared; CRDs the program reads serve the API versions in `served`."""
    declared: dict[tuple[str, str], Declared] = {}
    # Pulumi's test runner drives the current event loop; async tests elsewhere in
    # the session may have closed theirs, so give it a fresh one.
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    pulumi.runtime.set_mocks(_Mocks(declared, served), project="tide", stack=stack, preview=False)
    pulumi.runtime.set_all_config(config if config is not None else stack_config(stack))

    # Pulumi keeps stack transformations for the process: a later run would call this one
    # too and rewrite this run's record with its own resources of the same type and name.
    recording = [True]

    def record(args: pulumi.ResourceTransformationArgs) -> None:
        if not recording[0]:
            return
        entry = declared.setdefault((args.type_, args.name), Declared(args.type_, args.name))
        entry.depends_on = {_name(d) for d in _as_list(args.opts.depends_on)}
        entry.props = dict(args.props)
        parent = args.opts.parent
        entry.parent = (str(getattr(parent, "_type", "")), _name(parent)) if parent else None

    @pulumi.runtime.test  # type: ignore[misc]
    def program() -> pulumi.Output[Any]:
        pulumi.runtime.register_stack_transformation(record)
        namespace = runpy.run_path(str(main), run_name="__main__")
        del namespace
        return pulumi.Output.from_input(True)

    try:
        program()
    finally:
        recording[0] = False
        # Each run gets its own loop; an unclosed one is a ResourceWarning (an error here).
        # pulumi.runtime.sync_await also gives each mock worker thread a loop of its own
        # and never closes it: close those that are done too.
        loop.close()
        for leftover in gc.get_objects():
            if isinstance(leftover, asyncio.AbstractEventLoop) and not (
                leftover.is_running() or leftover.is_closed()
            ):
                leftover.close()
    return Program(stack=stack, resources=list(declared.values()))


def _as_list(value: object) -> Iterator[object]:
    if value is None:
        return iter(())
    if isinstance(value, list):
        return iter(value)
    return iter([value])


def _name(resource: object) -> str:
    return str(getattr(resource, "_name", resource))


# The engine's marker for a secret value: {SECRET_SIG: SECRET_VALUE, "value": ...}.
_SECRET_SIG = "4dabf18193072939515e22adb298388d"


def _is_secret(value: Any) -> bool:
    return isinstance(value, dict) and _SECRET_SIG in value


def _plain(value: Any) -> Any:
    """Unwrap secrets and turn the engine's floats back into integers (6, not 6.0)."""
    if _is_secret(value):
        return _plain(value["value"])
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value
