"""`tide registry`, `tide rabbitmq` and `tide topics`: what the brokers are given from the
catalog (schemas, RabbitMQ's definitions, Kafka's topics)."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from tide.console import EXIT_UNAVAILABLE, err, load_settings, out
from tide.needs import command_needs

registry_app = typer.Typer(help="The schema registry.", no_args_is_help=True)
rabbitmq_app = typer.Typer(help="RabbitMQ topology.", no_args_is_help=True)
topics_app = typer.Typer(help="Kafka topics.", no_args_is_help=True)


@registry_app.command("register")
def register() -> None:
    """Register every catalog schema, with compatibility BACKWARD on its subject."""
    from confluent_kafka.schema_registry import Schema, SchemaRegistryClient  # noqa: PLC0415
    from confluent_kafka.schema_registry.error import SchemaRegistryError  # noqa: PLC0415

    from tide.events.schemas import schema_text  # noqa: PLC0415

    settings = load_settings(*command_needs(("registry", "register")).required_settings)
    url = settings.schema_registry_url
    client = SchemaRegistryClient.new_client({"url": url})
    for event in settings.catalog().events:
        try:
            client.set_compatibility(event.subject, "BACKWARD")
            schema_id = client.register_schema(event.subject, Schema(schema_text(event), "JSON"))
        except SchemaRegistryError as exc:
            err.print(f"error: the schema registry at {url} refused {event.subject}: {exc}")
            raise typer.Exit(1) from None
        # The client raises its HTTP library's transport errors (httpx or httpx2, by install).
        except Exception as exc:  # noqa: BLE001
            err.print(f"error: cannot reach the schema registry at {url}: {exc}")
            raise typer.Exit(EXIT_UNAVAILABLE) from None
        out.print(f"{event.subject}: schema id {schema_id}")


@rabbitmq_app.command("definitions")
def definitions() -> None:
    """Print the catalog's RabbitMQ topology as definitions (for rabbitmqctl import_definitions)."""
    from tide.rabbitmq.definitions import definitions as render  # noqa: PLC0415

    out.print_json(json.dumps(render(load_settings().catalog())))


@topics_app.command("create")
def create_topics(
    replication_factor: Annotated[int, typer.Option(min=1, help="replicas per partition")] = 1,
) -> None:
    """Create every catalog topic, retry topic and DLQ that does not exist yet (local runs;
    on Kubernetes the KafkaTopic resources do this)."""
    from tide.kafka.topics import ensure_topics  # noqa: PLC0415

    settings = load_settings("kafka_bootstrap")
    created = ensure_topics(
        settings.kafka_client_config(),
        settings.catalog().all_topics(),
        replication_factor=replication_factor,
    )
    for name in created:
        out.print(f"created {name}")
    if not created:
        out.print("all topics exist")
