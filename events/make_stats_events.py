"""Writes the stats sample events (DynamoDB stream events of the Telemetry table).

Run from the repository root: python3 events/make_stats_events.py
"""
import json, os

TABLE_STREAM = ("arn:aws:dynamodb:eu-west-1:123456789012:table/geotag-telemetry/stream/"
                "2026-11-20T00:00:00.000")
T0 = 1795161600000  # 2026-11-20T08:00:00Z


def sort_key(ts, seq):
    from datetime import datetime, timezone
    t = datetime.fromtimestamp(ts / 1000, timezone.utc)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts % 1000:03d}Z#{seq:020d}"


def image(device, ts, lat, lon, seq, battery, speed):
    return {
        "device_id": {"S": device}, "sk": {"S": sort_key(ts, seq)}, "ts": {"N": str(ts)},
        "lat": {"N": str(lat)}, "lon": {"N": str(lon)}, "speed": {"N": str(speed)},
        "battery": {"N": str(battery)}, "seq": {"N": str(seq)},
        "expires_at": {"N": str(ts // 1000 + 30 * 86400)},
    }


def record(n, name, new, old=None):
    change = {
        "ApproximateCreationDateTime": T0 / 1000 + n,
        "Keys": {"device_id": new["device_id"], "sk": new["sk"]},
        "NewImage": new,
        "SequenceNumber": f"{4200000000000000000000 + n * 100:d}",
        "SizeBytes": 180,
        "StreamViewType": "NEW_IMAGE",
    }
    if old:
        change["OldImage"] = old
    return {"eventID": f"e{n:04d}", "eventName": name, "eventVersion": "1.1",
            "eventSource": "aws:dynamodb", "awsRegion": "eu-west-1",
            "dynamodb": change, "eventSourceARN": TABLE_STREAM}


def write(name, records):
    with open(os.path.join("events", "stats", name), "w") as f:
        json.dump({"Records": records}, f, indent=2)
        f.write("\n")


# Two tags across the 08:00-09:00 and 09:00-10:00 hours; tag-0001 walks north.
readings = []
for i in range(6):
    readings.append(image("tag-0001", T0 + 1_500_000 + i * 600_000, round(48.85 + i * 0.005, 6), 2.35, 100 + i, 90 - i, 1.5 + i * 0.1))
for i in range(3):
    readings.append(image("tag-0002", T0 + i * 60_000, 51.5, round(-0.12 + i * 0.001, 6), 7 + i, 40 - i * 10, 0))
write("inserts.json", [record(n + 1, "INSERT", r) for n, r in enumerate(readings)])

# A duplicate delivery (MODIFY, which the filter normally drops), and a late
# reading of tag-0001 taken before its latest one.
late = image("tag-0001", T0 + 1_800_000, 48.851, 2.351, 99, 95, 1.2)
write("modify-and-late.json", [
    record(20, "MODIFY", readings[0], readings[0]),
    record(21, "INSERT", late),
])
