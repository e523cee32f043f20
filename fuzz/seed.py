#!/usr/bin/env python3
"""Writes each fuzz target's seed corpus, fuzz/corpus/<target>/seed-*, from the sample events
in events/ and the embedded price book (shared/data/pricebook.json), in the text format each
target splits its input with (see the target's doc comment). The corpora are generated, never
committed: libFuzzer adds what it finds to the same folders, and seeds are rewritten (same
names) on every run.

Usage: fuzz/seed.py [TARGET ...]   (all targets when none is named)
"""

import base64
import hashlib
import json
import sys
from pathlib import Path

FUZZ = Path(__file__).resolve().parent
ROOT = FUZZ.parent
EVENTS = ROOT / "events"
CORPUS = FUZZ / "corpus"

# The sqs_message target's store holds this claim-checked body under this key.
CLAIMED_KEY = "claim-check/01890a5d-ac96-774b-bcce-b302099a8057.json"
CLAIMED = (
    '{"id":"evt_claimed","source":"stripe","type":"invoice.paid",'
    '"received_at":"2023-11-14T22:13:20Z","raw_key":"raw/stripe/evt_claimed.json",'
    '"event":{"id":"evt_claimed"}}'
)


def load(path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError):
        return None


def samples(folder=None):
    """(path, document) of every JSON sample under events/ (or one function's folder)."""
    base = EVENTS / folder if folder else EVENTS
    for path in sorted(base.rglob("*.json")):
        doc = load(path)
        if doc is not None:
            yield path, doc


def requests():
    """The Function URL requests of webhook-intake: (method, path, headers, body bytes, base64)."""
    for _, doc in samples("webhook-intake"):
        if not isinstance(doc, dict) or "rawPath" not in doc:
            continue
        body = doc.get("body") or ""
        b64 = bool(doc.get("isBase64Encoded"))
        raw = base64.b64decode(body) if b64 else body.encode()
        method = doc.get("requestContext", {}).get("http", {}).get("method", "POST")
        headers = {k.lower(): v for k, v in (doc.get("headers") or {}).items()}
        yield method, doc["rawPath"], headers, raw, b64, body


def queue_bodies(folder=None):
    """The message bodies of every SQS event sample (Records[].body)."""
    for _, doc in samples(folder):
        if isinstance(doc, dict) and isinstance(doc.get("Records"), list):
            for record in doc["Records"]:
                if isinstance(record, dict) and isinstance(record.get("body"), str):
                    yield record["body"]


def sqs_events():
    for _, doc in samples():
        if isinstance(doc, dict) and isinstance(doc.get("Records"), list):
            # Compact, so it starts with {"Records" as the target expects.
            yield json.dumps({"Records": doc["Records"], **{k: v for k, v in doc.items() if k != "Records"}},
                             separators=(",", ":"))


def message(source, event_type, msg_id, event, received_at="2023-11-14T22:13:20Z"):
    """An EventMessage, as the archiver forwards an event to its queues."""
    return json.dumps({
        "id": msg_id, "source": source, "type": event_type, "received_at": received_at,
        "raw_key": f"raw/{source}/{msg_id}.json", "event": event,
    })


def seeds_stripe_signature():
    for _, _, h, raw, _, _ in requests():
        if "stripe-signature" in h:
            yield h["stripe-signature"].encode() + b"\n" + raw


def seeds_standard_webhooks():
    for _, _, h, raw, _, _ in requests():
        if "webhook-signature" in h:
            yield "\n".join([h.get("webhook-id", ""), h.get("webhook-timestamp", ""),
                             h["webhook-signature"]]).encode() + b"\n" + raw


def seeds_webhook_intake():
    for method, path, h, raw, b64, body in requests():
        for sign in (False, True):
            lines = [f"{method} {path}" + (" base64" if b64 else "")]
            for k, v in h.items():
                if sign and k in ("stripe-signature", "webhook-signature"):
                    v = "SIGN"
                lines.append(f"{k}: {v}")
            yield ("\n".join(lines) + "\n\n").encode() + body.encode()


def seeds_envelope():
    for _, _, h, raw, _, _ in requests():
        yield h.get("webhook-id", "msg_seed").encode() + b"\n" + raw


def seeds_sqs_message():
    yield from (e.encode() for e in sqs_events())
    yield from (b.encode() for b in queue_bodies())
    pointer = {"blapi_claim_check": {"bucket": "memory", "key": CLAIMED_KEY, "bytes": len(CLAIMED)}}
    yield json.dumps(pointer, separators=(",", ":")).encode()
    yield json.dumps({"Records": [{"messageId": "m1", "body": json.dumps(pointer, separators=(",", ":")),
                                   "attributes": {"ApproximateReceiveCount": "1"}}]},
                     separators=(",", ":")).encode()


def seeds_usage_records():
    for body in queue_bodies("usage-billing"):
        doc = load_text(body)
        if isinstance(doc, dict) and doc.get("type") == "usage.reported":
            now = doc.get("received_at", "")
            yield now.encode() + b"\n" + body.encode()
    for _, _, _, raw, _, _ in requests():
        doc = load_text(raw.decode("utf-8", "replace"))
        if isinstance(doc, dict) and doc.get("type") == "usage.reported":
            yield doc.get("timestamp", "").encode() + b"\n" + raw


def seeds_lead_input():
    yield from (b.encode() for b in queue_bodies("lead-enrichment"))
    for _, path, h, raw, _, _ in requests():
        doc = load_text(raw.decode("utf-8", "replace"))
        if not isinstance(doc, dict):
            continue
        source = path.rsplit("/", 1)[-1]
        msg_id = h.get("webhook-id") or doc.get("id") or "msg_seed"
        yield message(source, doc.get("type", ""), msg_id, doc).encode()


def seeds_license_file():
    for _, doc in samples("license-minting"):
        if isinstance(doc, dict) and isinstance(doc.get("license"), str):
            yield b"\x00" + doc["license"].encode()
    yield b"\x01\x00"
    yield b"\x01\x02\x00\x10\x01"
    yield b"\x01\x00\x01\x00\x80"
    # Key sets and revocation lists; the target puts its own key for $PEM, its key id for $KID
    # and its license's id for $ID.
    entry = {"kid": "$KID", "public_key_pem": "$PEM", "not_before": 1779996400123, "not_after": None}
    yield b"\x02" + json.dumps({"keys": [entry]}).encode()
    yield b"\x02" + json.dumps({"keys": [dict(entry, not_after=1779999000000), dict(entry, kid="0011223344556677")]}).encode()
    revoked = {"id": "$ID", "customer_id": "cus_fuzz", "subscription_id": "sub_fuzz",
               "revoked_at": 1780000000123, "reason": "suspended"}
    yield b"\x03" + json.dumps({"kid": "$KID", "issued_at": 1780000000123, "revoked": [revoked]}).encode()
    yield b"\x03" + json.dumps({"kid": "$KID", "issued_at": 1780000000123,
                                "revoked": [dict(revoked, id="ybndrfg8ejkmcpqxot1uwisza3", reason="refunded"),
                                            dict(revoked, revoked_at=1790000000000)]}).encode()


def seeds_pricebook():
    text = (ROOT / "shared" / "data" / "pricebook.json").read_text(encoding="utf-8")
    yield text.encode()
    book = json.loads(text)
    for plan_id, plan in book.get("plans", {}).items():
        yield json.dumps({"version": "seed", "plans": {plan_id: plan}}).encode()
        for charge in plan.get("charges", []):
            yield json.dumps(charge.get("model")).encode()
    # Decimals at the edges of what the quantity parser takes (long exponents, many digits).
    for rate in ("1e2147483647", "1.5e-2147483648", "0.0000015", "-9223372036854.775808"):
        yield json.dumps({"type": "per_unit", "unit_price": rate}).encode()


def load_text(text):
    try:
        return json.loads(text)
    except ValueError:
        return None


TARGETS = {
    "envelope": seeds_envelope,
    "lead_input": seeds_lead_input,
    "license_file": seeds_license_file,
    "pricebook": seeds_pricebook,
    "sqs_message": seeds_sqs_message,
    "standard_webhooks": seeds_standard_webhooks,
    "stripe_signature": seeds_stripe_signature,
    "usage_records": seeds_usage_records,
    "webhook_intake": seeds_webhook_intake,
}


def main(names):
    unknown = [n for n in names if n not in TARGETS]
    if unknown:
        sys.exit(f"no such fuzz target: {', '.join(unknown)} (known: {', '.join(TARGETS)})")
    for name in names or TARGETS:
        folder = CORPUS / name
        folder.mkdir(parents=True, exist_ok=True)
        count = 0
        for seed in TARGETS[name]():
            digest = hashlib.sha1(seed).hexdigest()[:16]
            (folder / f"seed-{digest}").write_bytes(seed)
            count += 1
        if count == 0:
            sys.exit(f"{name}: no seeds found in events/ (sample events moved?)")
        print(f"{name}: {count} seeds")


if __name__ == "__main__":
    main(sys.argv[1:])
