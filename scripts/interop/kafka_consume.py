#!/usr/bin/env python3
"""An outside consumer for the event tests: confluent-kafka (librdkafka), not our client.

Reads --count messages from --topic (from the earliest offset, in a fresh consumer
group) and prints one JSON line per message: {"key", "partition", "offset", "value"}
with the value parsed as JSON. Exits 1 if fewer arrived within --timeout seconds.
With --ca-file it connects over TLS (the broker's certificate verified against that
CA), and with --sasl-mechanism/--username/--password it logs in with SASL/SCRAM.
Only ever points at the loopback broker the test started.
"""
import argparse
import json
import sys
import time
import uuid

from confluent_kafka import Consumer


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--brokers", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--count", type=int, required=True)
    ap.add_argument("--timeout", type=float, default=30)
    ap.add_argument("--ca-file")
    ap.add_argument("--sasl-mechanism")
    ap.add_argument("--username")
    ap.add_argument("--password")
    a = ap.parse_args()
    conf = {
        "bootstrap.servers": a.brokers,
        "group.id": f"outside-{uuid.uuid4()}",
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
    }
    if a.ca_file:
        conf["ssl.ca.location"] = a.ca_file
    if a.sasl_mechanism:
        conf.update({
            "sasl.mechanism": a.sasl_mechanism,
            "sasl.username": a.username,
            "sasl.password": a.password,
        })
    conf["security.protocol"] = {
        (False, False): "plaintext",
        (True, False): "ssl",
        (False, True): "sasl_plaintext",
        (True, True): "sasl_ssl",
    }[(bool(a.ca_file), bool(a.sasl_mechanism))]
    c = Consumer(conf)
    c.subscribe([a.topic])
    got = 0
    deadline = time.monotonic() + a.timeout
    try:
        while got < a.count and time.monotonic() < deadline:
            m = c.poll(0.5)
            if m is None:
                continue
            if m.error():
                print(f"consumer error: {m.error()}", file=sys.stderr)
                continue
            print(json.dumps({
                "key": m.key().decode() if m.key() else None,
                "partition": m.partition(),
                "offset": m.offset(),
                "value": json.loads(m.value()),
            }), flush=True)
            got += 1
    finally:
        c.close()
    if got < a.count:
        print(f"only {got} of {a.count} messages within {a.timeout} s", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
