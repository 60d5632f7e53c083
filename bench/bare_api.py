"""The API baseline: a bare FastAPI endpoint that publishes the posted event's data with a bare
confluent-kafka producer (same producer settings as Tide's) and answers once Kafka acked it.
No envelope, no schema check, no body limit, no metrics: what Tide's video-service adds.

    python -m bench.bare_api --port 8099 --bootstrap 127.0.0.1:9092 --topic video-events
"""

from __future__ import annotations

import argparse
import asyncio
import json
import threading
from typing import Any

from confluent_kafka import KafkaError, Message, Producer
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

from tide.kafka.producer import producer_config
from tide.launch import serve


def create_app(bootstrap: str, topic: str) -> FastAPI:
    producer = Producer(producer_config({"bootstrap.servers": bootstrap}, 10))
    closing = threading.Event()

    def serve_callbacks() -> None:
        while not closing.is_set():
            producer.poll(0.1)

    threading.Thread(target=serve_callbacks, daemon=True).start()
    app = FastAPI()

    @app.post("/v1/events", status_code=202)
    async def accept(request: Request) -> Response:
        payload: dict[str, Any] = json.loads(await request.body())
        loop = asyncio.get_running_loop()
        done: asyncio.Future[Message] = loop.create_future()

        def delivered(error: KafkaError | None, message: Message) -> None:
            if error is None:
                loop.call_soon_threadsafe(done.set_result, message)
            else:
                loop.call_soon_threadsafe(done.set_exception, RuntimeError(error.str()))

        producer.produce(
            topic,
            json.dumps(payload["data"]).encode(),
            str(payload["data"]["user_id"]).encode(),
            on_delivery=delivered,
        )
        message = await done
        return JSONResponse({"offset": message.offset()}, status_code=202)

    @app.get("/readyz")
    async def ready() -> Response:
        return JSONResponse({"ready": True})

    return app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    args = parser.parse_args()
    app = create_app(args.bootstrap, args.topic)
    # Served exactly as Tide's services are, so the ratio compares the endpoints only.
    serve(app, "127.0.0.1", args.port)


if __name__ == "__main__":
    main()
