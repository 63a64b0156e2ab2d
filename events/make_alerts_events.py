"""Writes the alerts sample events: a DeviceStats stream batch of `latest`
changes, and the EventBridge events of the silence check and of the
subscription audit.

Run from the repository root: python3 events/make_alerts_events.py

The stream batch (events/alerts/latest-changes.json), with the registry the
handler tests set up (a 500 m "depot" zone around 48.8606, 2.3376 for every
tag; tag-0042 owned by customer acme, tag-0007 by no one):
- tag-0042 enters and leaves the depot within one stats write: the ends are
  both outside, the trail shows the visit (one enter, one exit alert); its
  battery falls from 24% to 18% on the way (one battery alert);
- tag-0007 drives at 45 m/s for three minutes over three changes (one
  speeding alert, unassigned), and a duplicate of its last record follows
  (nothing more);
- a rollup item's change, which the filter criteria normally drop, is ignored.
"""
import json, os
from datetime import datetime, timezone

STREAM = ("arn:aws:dynamodb:eu-west-1:123456789012:table/geotag-dev-device-stats/stream/"
          "2026-11-20T00:00:00.000")
T0 = 1795161600000  # 2026-11-20T08:00:00Z
MINUTE = 60000


def sort_key(ts, seq):
    t = datetime.fromtimestamp(ts / 1000, timezone.utc)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts % 1000:03d}Z#{seq:020d}"


def n(value):
    return {"N": str(value)}


def point(ts, seq, lat, lon, speed, battery):
    return {"M": {"t": n(ts), "k": {"S": sort_key(ts, seq)}, "la": n(lat), "lo": n(lon),
                  "s": n(speed), "b": n(battery)}}


def latest(device, version, track):
    """The `latest` item after absorbing `track` [(minute, seq, lat, lon, speed, battery)]."""
    minute, seq, lat, lon, speed, battery = track[-1]
    ts = T0 + minute * MINUTE
    return {
        "device_id": {"S": device}, "sk": {"S": "latest"}, "kind": {"S": "latest"},
        "revision": n(version),
        "ts": n(ts), "reading_key": {"S": sort_key(ts, seq)}, "lat": n(lat), "lon": n(lon),
        "speed": n(speed), "battery": n(battery), "battery_ts": n(ts), "seq": n(seq),
        "version": n(version), "silence_shard": n(3), "last_seen": n(ts),
        "trail": {"L": [point(T0 + m * MINUTE, s, la, lo, sp, b) for (m, s, la, lo, sp, b) in track]},
    }


def record(number, name, new, old=None):
    change = {
        "ApproximateCreationDateTime": T0 / 1000 + number,
        "Keys": {"device_id": new["device_id"], "sk": new["sk"]},
        "NewImage": new,
        "SequenceNumber": f"{4300000000000000000000 + number * 100:d}",
        "SizeBytes": 400,
        "StreamViewType": "NEW_AND_OLD_IMAGES",
    }
    if old:
        change["OldImage"] = old
    return {"eventID": f"a{number:04d}", "eventName": name, "eventVersion": "1.1",
            "eventSource": "aws:dynamodb", "awsRegion": "eu-west-1",
            "dynamodb": change, "eventSourceARN": STREAM}


def main():
    records = []
    # tag-0042: outside (west of the depot), then one write through it.
    before = latest("tag-0042", 1, [(0, 1, 48.8606, 2.3176, 2.0, 24.0)])
    visit = [
        (1, 2, 48.8606, 2.3326, 2.0, 22.0),  # inside (about 370 m west of the centre)
        (2, 3, 48.8606, 2.3376, 2.0, 19.5),  # inside, battery below 20%
        (3, 4, 48.8606, 2.3576, 2.0, 18.0),  # outside again (1.5 km east)
    ]
    after = latest("tag-0042", 2, visit)
    records.append(record(1, "MODIFY", after, before))

    # tag-0007: a speeding episode over three changes, then a duplicate record.
    states = [
        (10, 1, 48.90, 2.30, 12.0, 80.0),
        (11, 2, 48.90, 2.34, 45.0, 80.0),
        (12, 3, 48.90, 2.38, 45.0, 79.5),
        (13, 4, 48.90, 2.42, 45.0, 79.0),
    ]
    old = latest("tag-0007", 1, states[:1])
    for i, state in enumerate(states[1:], start=2):
        new = latest("tag-0007", i, [state])
        records.append(record(len(records) + 1, "MODIFY", new, old))
        old = new
    records.append(dict(records[-1], eventID="a-duplicate"))

    # An hourly rollup's change: not a latest state.
    rollup = {"device_id": {"S": "tag-0007"}, "sk": {"S": "hour#2026-11-20T08"},
              "kind": {"S": "hour"}, "count": n(4), "revision": n(4)}
    records.append(record(len(records) + 1, "MODIFY", rollup, rollup))

    os.makedirs("events/alerts", exist_ok=True)
    with open("events/alerts/latest-changes.json", "w") as out:
        json.dump({"Records": records}, out, indent=1)
        out.write("\n")

    scheduled = {
        "version": "0", "id": "53dc4d37-cffa-4f76-80c9-8b7d4a4d2eaa",
        "detail-type": "Scheduled Event", "source": "aws.events", "account": "123456789012",
        "time": "2026-11-20T09:00:00Z", "region": "us-east-1",
        # The local stack's rule (`geotag up` sets SILENCE_RULE_ARN to it):
        # the function refuses schedule events of any other resource.
        "resources": ["arn:aws:events:us-east-1:123456789012:rule/geotag-local-silence-check"],
        "detail": {},
    }
    with open("events/alerts/silence-check.json", "w") as out:
        json.dump(scheduled, out, indent=1)
        out.write("\n")

    audit = dict(scheduled, id="0d1c4a52-7f3e-4b8e-9a53-3c1b2f1e6a90",
                 resources=["arn:aws:events:us-east-1:123456789012:rule/geotag-local-subscription-audit"])
    with open("events/alerts/subscription-audit.json", "w") as out:
        json.dump(audit, out, indent=1)
        out.write("\n")


if __name__ == "__main__":
    main()
