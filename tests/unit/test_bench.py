"""The benchmark's arithmetic and report: ratios are paired within a round, verdicts follow the
targets, and the committed chart is a real PNG. The bare paths build Tide's own headers and
run the codec's own check; a Java rate is a ceiling only when it is one; the per-message peer
row is against FastStream's faster backend."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from bench import reference
from bench.consume import _peer_rows
from bench.measure import Mode, Rounds, Row, Spread, interleaved
from bench.payloads import recommendation
from bench.report import chart, table
from bench.same_work import Headers, checked

from ott.catalog import CATALOG
from tide.codecs.json_schema import EventCodec, InvalidEventError
from tide.events.envelope import CloudEvent


def test_rounds_alternate_and_ratios_pair_within_each_round() -> None:
    calls: list[str] = []
    rates = {"ours": iter([1.0, 10.0, 20.0, 30.0]), "bare": iter([1.0, 20.0, 20.0, 60.0])}

    def path(name: str) -> float:
        calls.append(name)
        return next(rates[name])

    rounds = interleaved(
        {"ours": lambda: path("ours"), "bare": lambda: path("bare")}, Mode("t", 3, 1)
    )
    # A warm-up of each, then ours and bare back to back in every round, the order reversed
    # every other round (whoever runs second must not always be the same one).
    assert calls == ["ours", "bare", "ours", "bare", "bare", "ours", "ours", "bare"]
    assert rounds.ratio("ours", "bare").runs == (0.5, 1.0, 0.5)
    assert rounds.spread("bare").median == 20.0


def _row(median: float, target: float | None) -> Row:
    return Row(
        path="produce",
        case="200 B",
        ours="publish",
        baseline="bare",
        ratio=Spread((median - 0.1, median, median + 0.1)),
        target=target,
        ours_rate=1000,
        baseline_rate=2000,
    )


def test_the_table_names_each_missed_target() -> None:
    text = table([_row(0.5, 0.7), _row(0.9, 0.7), _row(0.3, None)])
    lines = text.splitlines()[2:]
    assert "0.50 (0.40-0.60) | ≥ 0.70 | **missed**" in lines[0]
    assert "| met |" in lines[1]
    assert "| - |" in lines[2]


def test_the_chart_is_a_png(tmp_path: Path) -> None:
    out = tmp_path / "ratios.png"
    chart([_row(0.5, 0.7), _row(1.2, 1.0)], out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _codec() -> EventCodec:
    return EventCodec(CATALOG)


def test_the_bare_paths_build_tides_headers_per_event() -> None:
    codec = _codec()
    sample, other = recommendation(200, 1), recommendation(1024, 2)
    kafka = Headers.kafka(codec, sample)
    assert kafka.binary(other) == codec.encode(other).headers
    notification = CloudEvent(
        type="notification.requested",
        source="/bench",
        data={"user_id": "u1", "channel": "push", "title": "t", "video_ids": ["v1"]},
    )
    later = CloudEvent(type=notification.type, source="/other", data=notification.data)
    assert Headers.amqp(codec, notification).text(later) == codec.encode_amqp(later)[1]


def test_the_bare_consumers_check_is_the_codecs() -> None:
    codec = _codec()
    event = recommendation(200, 3)
    encoded = codec.encode(event)
    assert checked(codec, encoded.value, encoded.headers) == event.id
    with pytest.raises(InvalidEventError):
        checked(codec, orjson.dumps({"reason": "no user"}), encoded.headers)


def test_a_java_rate_is_a_ceiling_only_above_every_python_figure() -> None:
    assert reference.java("Tool", 100.0, (50.0, 99.0)) == "Java Tool 100/s (ceiling)"
    assert reference.java("Tool", 100.0, (50.0, 460_324.0)) == "Java Tool 100/s (reference)"
    assert "(reference, not a ceiling)" in reference.do_nothing(460_324.0)


def test_the_per_message_peer_row_is_against_the_faster_backend() -> None:
    rounds = Rounds(
        {
            "tide": [20_000.0, 22_000.0, 24_000.0],
            "tide-unmarked": [40_000.0, 40_000.0, 50_000.0],
            "faststream-batch": [20_000.0, 20_000.0, 20_000.0],
            "faststream": [2_000.0, 2_000.0, 3_000.0],
        }
    )
    batch, per_message = _peer_rows(rounds, {"aiokafka": 1_000.0, "confluent": 3_000.0})
    assert batch.ratio.runs == (1.0, 1.1, 1.2)
    # The peer writes no marks: the row also says how Tide compares without its own.
    assert "without its mark against the same subscriber: 2.00 (2.00-2.50)" in batch.extra
    assert "confluent (the faster backend" in per_message.baseline
    assert per_message.ratio.runs == (10.0, 11.0, 8.0)
    assert per_message.met
