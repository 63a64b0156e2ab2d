"""The ingest function as a good Python engineer would write it: the baseline
geotag's Rust ingest is measured against. Not part of the product.

Same contract as functions/ingest: an SQS batch of device messages (raw
delivery or the SNS envelope; one reading or a batch of readings), each reading
validated with a reason code and the offending field, duplicates in a batch
written once, items with the Telemetry key and TTL, BatchWriteItem in chunks of
25, partial batch response. Powertools' BatchProcessor and parser models carry
the SQS side; pydantic validates readings; boto3's TypeSerializer makes items.
The dead-letter send is left out: the benchmark's events are all valid, so
neither language sends one.
"""

from __future__ import annotations

import base64
import json
import os
import re
import time
from datetime import datetime, timezone
from decimal import Decimal
from typing import Annotated, Any, Optional, Union

import boto3
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType
from aws_lambda_powertools.utilities.parser.models import SqsRecordModel
from boto3.dynamodb.types import TypeSerializer
from pydantic import BaseModel, ConfigDict, Field, StrictInt, ValidationError

TABLE = os.environ.get("TELEMETRY_TABLE", "geotag-telemetry")
RETENTION_DAYS = int(os.environ.get("RETENTION_DAYS", "30"))
MAX_FUTURE_SKEW_MS = int(os.environ.get("MAX_FUTURE_SKEW_SECONDS", "300")) * 1000
MAX_BYTES = int(os.environ.get("MAX_MESSAGE_BYTES", "262144"))
DEVICE_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")

SERIALIZER = TypeSerializer()
# Created at import, as Lambda's init phase does, and reused across invocations.
DYNAMODB = boto3.client("dynamodb")


class Rejected(Exception):
    def __init__(self, reason: str, field: str, detail: str):
        super().__init__(f"{reason} at {field}: {detail}")
        self.reason, self.field, self.detail = reason, field, detail


Number = Union[StrictInt, float]


class WireReading(BaseModel):
    model_config = ConfigDict(extra="ignore")
    device_id: Optional[str] = None
    ts: Union[StrictInt, str]
    lat: Annotated[float, Field(ge=-90, le=90)]
    lon: Annotated[float, Field(ge=-180, le=180)]
    alt: Optional[Annotated[float, Field(ge=-1000, le=20000)]] = None
    speed: Optional[Annotated[float, Field(ge=0, le=300)]] = None
    heading: Optional[Annotated[float, Field(ge=0, le=360)]] = None
    battery: Optional[Annotated[float, Field(ge=0, le=100)]] = None
    accuracy: Optional[Annotated[float, Field(ge=0, le=100000)]] = None
    seq: Optional[Annotated[int, Field(ge=0)]] = None


def _reason_of(error: ValidationError, prefix: str) -> Rejected:
    first = error.errors()[0]
    field = prefix + ".".join(str(part) for part in first["loc"] if not isinstance(part, int))
    kind = first["type"]
    reason = {
        "missing": "missing_field",
        "greater_than_equal": "out_of_range",
        "less_than_equal": "out_of_range",
    }.get(kind, "invalid_type")
    return Rejected(reason, field or prefix.rstrip(".") or "$", first["msg"])


def _millis(ts: Union[int, str], field: str) -> int:
    if isinstance(ts, int):
        return ts
    try:
        return int(datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp() * 1000)
    except ValueError as error:
        raise Rejected("invalid_timestamp", field, str(error)) from None


def _validate(raw: Any, batch_device: Optional[str], prefix: str, thing: str, received_at: int, now_ms: int) -> dict:
    if not isinstance(raw, dict):
        raise Rejected("invalid_type", prefix.rstrip(".") or "$", "expected a JSON object")
    if "readings" in raw:
        raise Rejected("ambiguous_message", prefix + "readings", "readings cannot nest")
    try:
        wire = WireReading.model_validate(raw)
    except ValidationError as error:
        raise _reason_of(error, prefix) from None
    device = wire.device_id if wire.device_id is not None else (batch_device or thing)
    if not DEVICE_ID.fullmatch(device):
        raise Rejected("invalid_device_id", prefix + "device_id", repr(device[:80]))
    if device != thing:
        raise Rejected("device_id_mismatch", prefix + "device_id", f"{device!r}, authenticated {thing!r}")
    ts = _millis(wire.ts, prefix + "ts")
    if ts > received_at + MAX_FUTURE_SKEW_MS:
        raise Rejected("timestamp_in_future", prefix + "ts", f"{ts} ms")
    if ts < now_ms - RETENTION_DAYS * 86_400_000:
        raise Rejected("timestamp_too_old", prefix + "ts", f"{ts} ms")
    heading = wire.heading
    if heading == 360:
        heading = 0.0
    return {
        "device_id": device,
        "ts": ts,
        "lat": wire.lat,
        "lon": wire.lon,
        "alt": wire.alt,
        "speed": wire.speed,
        "heading": heading,
        "battery": wire.battery,
        "accuracy": wire.accuracy,
        "seq": wire.seq,
        "received_at": received_at,
    }


def decode_message(body: str, now_ms: int) -> tuple[list[dict], list[Rejected]]:
    """Valid readings and per-reading rejections; raises Rejected if nothing is usable."""
    if len(body.encode()) > MAX_BYTES:
        raise Rejected("body_too_large", "$", f"{len(body)} bytes")
    try:
        message = json.loads(body)
    except ValueError as error:
        raise Rejected("malformed_json", "$", str(error)) from None
    prefix = ""
    if isinstance(message, dict) and "Type" in message and "TopicArn" in message:
        if message["Type"] != "Notification":
            raise Rejected("invalid_envelope", "Type", repr(message["Type"]))
        if not isinstance(message.get("Message"), str):
            raise Rejected("invalid_envelope", "Message", "SNS envelope without a Message")
        prefix = "Message."
        try:
            message = json.loads(message["Message"])
        except ValueError as error:
            raise Rejected("malformed_json", "Message", str(error)) from None
    if not isinstance(message, dict):
        raise Rejected("invalid_type", prefix.rstrip(".") or "$", "expected a JSON object")
    # The edge envelope: the authenticated thing, its arrival, the tag's bytes.
    thing, received_at, payload = (message.get(k) for k in ("thing_name", "received_at", "payload"))
    if thing is None or received_at is None or payload is None:
        raise Rejected("unauthenticated", prefix + "thing_name", "no edge envelope")
    if not isinstance(thing, str) or not DEVICE_ID.fullmatch(thing):
        raise Rejected("invalid_envelope", prefix + "thing_name", repr(thing))
    if not isinstance(received_at, int) or received_at > now_ms + MAX_FUTURE_SKEW_MS:
        raise Rejected("invalid_envelope", prefix + "received_at", repr(received_at))
    try:
        text = base64.b64decode(payload, validate=True).decode()
    except (ValueError, TypeError) as error:
        raise Rejected("invalid_envelope", prefix + "payload", str(error)) from None
    prefix += "payload."
    try:
        message = json.loads(text)
    except ValueError as error:
        raise Rejected("malformed_json", prefix.rstrip("."), str(error)) from None
    if not isinstance(message, dict):
        raise Rejected("invalid_type", prefix.rstrip("."), "expected a JSON object")
    if "readings" not in message:
        return [_validate(message, None, prefix, thing, received_at, now_ms)], []
    items = message["readings"]
    device = message.get("device_id", thing)
    if not isinstance(device, str) or not DEVICE_ID.fullmatch(device):
        raise Rejected("invalid_device_id", prefix + "device_id", repr(device))
    if device != thing:
        raise Rejected("device_id_mismatch", prefix + "device_id", f"{device!r}, authenticated {thing!r}")
    if not isinstance(items, list) or not items:
        raise Rejected("empty_batch", prefix + "readings", "a batch needs readings")
    readings, rejected = [], []
    for index, item in enumerate(items):
        try:
            readings.append(_validate(item, device, f"{prefix}readings[{index}].", thing, received_at, now_ms))
        except Rejected as rejection:
            rejected.append(rejection)
    return readings, rejected


def _rfc3339_millis(ts_ms: int) -> str:
    moment = datetime.fromtimestamp(ts_ms / 1000, tz=timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts_ms % 1000:03d}Z"


def to_item(reading: dict) -> dict:
    sort_key = _rfc3339_millis(reading["ts"])
    if reading["seq"] is not None:
        sort_key += f"#{reading['seq']:020d}"
    plain = {"device_id": reading["device_id"], "sk": sort_key, "ts": reading["ts"]}
    for name in ("lat", "lon", "alt", "speed", "heading", "battery", "accuracy"):
        if reading[name] is not None:
            # DynamoDB numbers must be Decimal for boto3; str() keeps the shortest form.
            plain[name] = Decimal(str(reading[name]))
    if reading["seq"] is not None:
        plain["seq"] = reading["seq"]
    plain["received_at"] = reading["received_at"]
    plain["expires_at"] = reading["ts"] // 1000 + RETENTION_DAYS * 86_400
    return {name: SERIALIZER.serialize(value) for name, value in plain.items()}


class Batch:
    """One invocation's readings, deduplicated by Telemetry key."""

    def __init__(self, now_ms: int):
        self.now_ms = now_ms
        self.items: dict[tuple[str, str], dict] = {}
        self.rejected: list[tuple[str, Rejected]] = []

    def record_handler(self, record: SqsRecordModel) -> None:
        try:
            readings, rejected = decode_message(record.body, self.now_ms)
        except Rejected as rejection:
            self.rejected.append((record.messageId, rejection))
            return
        self.rejected.extend((record.messageId, r) for r in rejected)
        for reading in readings:
            item = to_item(reading)
            self.items[(item["device_id"]["S"], item["sk"]["S"])] = item

    def write_requests(self) -> list[dict]:
        items = list(self.items.values())
        return [
            {TABLE: [{"PutRequest": {"Item": item}} for item in items[start : start + 25]]}
            for start in range(0, len(items), 25)
        ]


def transform(event: dict, now_ms: int) -> tuple[dict, list[dict], Batch]:
    """Everything ingest does before the network: the part the bench times."""
    batch = Batch(now_ms)
    processor = BatchProcessor(event_type=EventType.SQS, model=SqsRecordModel)
    with processor(records=event["Records"], handler=batch.record_handler):
        processor.process()
    return processor.response(), batch.write_requests(), batch


def handler(event: dict, context: Any) -> dict:
    response, requests, _ = transform(event, int(time.time() * 1000))
    for request in requests:
        pending = request
        while pending:
            pending = DYNAMODB.batch_write_item(RequestItems=pending).get("UnprocessedItems")
    return response
