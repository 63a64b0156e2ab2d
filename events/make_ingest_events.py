"""Writes the ingest sample events (SQS events as Lambda delivers them).

Run from the repository root: python3 events/make_ingest_events.py
The readings are dated 2026-11-20; tests pin their clock to that day.

Every body is an edge envelope, as IoT Core's topic rule (template.yaml,
TelemetryRule) publishes it: the thing it authenticated, the broker's receive
time, and the tag's payload in base64 (see geotag::decode).
"""
import base64, hashlib, json, os

ARN = "arn:aws:sqs:eu-west-1:123456789012:geotag-ingest"
TOPIC = "arn:aws:sns:eu-west-1:123456789012:geotag-telemetry"
T0 = 1795161600000  # 2026-11-20T08:00:00Z
RECEIVED = T0 + 600_000  # the broker received the messages at 08:10


def record(n, body):
    return {
        "messageId": f"00000000-0000-4000-8000-{n:012d}",
        "receiptHandle": f"AQEB-sample-receipt-handle-{n}",
        "body": body,
        "attributes": {
            "ApproximateReceiveCount": "1",
            "SentTimestamp": str(T0 + 60_000),
            "SenderId": "AIDAIENQZJOLO23YVJ4VO",
            "ApproximateFirstReceiveTimestamp": str(T0 + 60_010),
        },
        "messageAttributes": {},
        "md5OfBody": hashlib.md5(body.encode()).hexdigest(),
        "eventSource": "aws:sqs",
        "eventSourceARN": ARN,
        "awsRegion": "eu-west-1",
    }


def envelope(n, message):
    return json.dumps({
        "Type": "Notification",
        "MessageId": f"sns-{n:04d}-5f1a-4b3e-9a7d-3c2b1a0f9e8d",
        "TopicArn": TOPIC,
        "Message": message,
        "Timestamp": "2026-11-20T08:01:00.000Z",
        "SignatureVersion": "1",
        "Signature": "EXAMPLE",
        "SigningCertURL": "https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-example.pem",
        "UnsubscribeURL": "https://sns.eu-west-1.amazonaws.com/?Action=Unsubscribe",
    })


def edge(thing, payload, received_at=RECEIVED):
    """The topic rule's output for `payload` (a str) published by `thing`."""
    return json.dumps({
        "payload": base64.b64encode(payload.encode()).decode(),
        "thing_name": thing,
        "received_at": received_at,
    })


def reading(device, i, **extra):
    r = {"device_id": device, "ts": T0 + i * 30_000, "lat": 48.8566 + i * 0.001,
         "lon": 2.3522 + i * 0.0015, "speed": 8.5, "heading": 45, "battery": 91 - i,
         "accuracy": 5, "seq": 100 + i}
    r.update(extra)
    return r


def write(name, records):
    with open(os.path.join("events", "ingest", name), "w") as f:
        json.dump({"Records": records}, f, indent=2)
        f.write("\n")


write("valid-batch.json", [
    record(1, edge("tag-0001", json.dumps(reading("tag-0001", 0)))),
    record(2, edge("tag-0002", json.dumps(reading("tag-0002", 1, ts="2026-11-20T08:00:30Z", alt=35.5)))),
    record(3, edge("tag-0003", json.dumps(reading("tag-0003", 2)))),
])

write("sns-envelope.json", [
    record(11, envelope(1, edge("tag-0004", json.dumps(reading("tag-0004", 0))))),
    record(12, envelope(2, edge("tag-0004", json.dumps(reading("tag-0004", 1))))),
])

buffered = {"readings": [
    {k: v for k, v in reading("tag-0005", i).items() if k != "device_id"} for i in range(6)]}
write("multi-reading.json", [record(21, edge("tag-0005", json.dumps(buffered)))])

partly_bad = {"device_id": "tag-0006", "readings": [
    {"ts": T0, "lat": 51.5072, "lon": -0.1276, "seq": 1},
    {"ts": T0 + 1000, "lat": 151.5, "lon": -0.1276, "seq": 2},
    {"ts": T0 + 2000, "lat": 51.5073, "lon": -0.1277, "seq": 3},
]}
good = edge("tag-0007", json.dumps(reading("tag-0007", 0)))
write("bad-records.json", [
    record(31, good),
    record(32, edge("tag-0008", '{"device_id": "tag-0008", "ts": 1795161600000, "lat": 48.1')),
    record(33, edge("tag-0009", json.dumps({"device_id": "tag-0009", "ts": T0, "lat": 95.0, "lon": 2.0}))),
    # tag-0010 speaks for tag-0011.
    record(34, edge("tag-0010", json.dumps({"device_id": "tag-0011", "ts": T0, "lat": 45.0, "lon": 2.0}))),
    record(35, edge("tag-0010", json.dumps({"device_id": "tag 10", "ts": T0, "lat": 45.0, "lon": 2.0}))),
    record(36, edge("tag-0006", json.dumps(partly_bad))),
    record(37, good),
    record(38, envelope(3, "not json at all")),
    # Published to SNS by someone who is not the topic rule or a gateway.
    record(39, json.dumps({"device_id": "tag-0012", "ts": T0, "lat": 45.0, "lon": 2.0})),
    # Stamped 301 s after the broker received it.
    record(40, edge("tag-0013", json.dumps({"ts": RECEIVED + 301_000, "lat": 45.0, "lon": 2.0}))),
])
