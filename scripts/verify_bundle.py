#!/usr/bin/env python3
"""Check an exchange audit bundle (exchange-audit-bundle/1) offline and say what it proves.

    python3 verify_bundle.py BUNDLE.json [--gateway-key gateway.key.pub]
        [--partner-key NAME=partner.key.pub ...] [--approvers approvers.json]

Needs only Python 3.11+ and the `cryptography` package; it does not import the gateway's code,
and everything it checks is described in docs/formats.md, so anyone can write their own. The
bundle carries the keys its signatures are checked with, and whoever made it could have put
their own there: pin them from sources you trust. --gateway-key is the key the provider
published; --partner-key (repeatable) a partner's acknowledgement key, under a name you choose;
--approvers a copy of the operator's approvers file ({"approvers": [{"name", "key"}],
"revoked": [key ids]}). A key the bundle lists that differs from the ones pinned is a failure;
keys not pinned are said to be taken from the bundle. Exit status 0: every check passed; 1:
something failed (each failure is printed); 2: the file is not a bundle, or a key file is
unreadable.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import hashlib
import hmac
import json
import struct
import sys
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

FORMAT = "exchange-audit-bundle/1"
DASH = "\u2014 "


Pinned = dict[str, tuple[str, Ed25519PublicKey]]  # key id -> (name, key)


class Bad(Exception):
    """One check that failed."""


# -- keys and signed notes (C2SP signed-note, tlog-checkpoint, tlog-cosignature) -----------------


def ssh_key(line: str) -> Ed25519PublicKey:
    key = serialization.load_ssh_public_key(line.strip().encode())
    if not isinstance(key, Ed25519PublicKey):
        raise Bad("a key in the bundle is not Ed25519")
    return key


def raw(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id(key: Ed25519PublicKey) -> str:
    return "ed25519:" + hashlib.sha256(raw(key)).hexdigest()[:16]


def split_note(note: str) -> tuple[str, list[tuple[str, bytes]]]:
    """The note's text and its signature lines as (name, decoded blob)."""
    cut = note.rfind("\n\n")
    if cut < 0 or not note.endswith("\n"):
        raise Bad("a checkpoint is not a signed note")
    lines = []
    for line in note[cut + 2 : -1].split("\n"):
        if not line.startswith(DASH):
            raise Bad("a signature line of a note does not start with an em dash")
        name, _, blob = line[len(DASH) :].rpartition(" ")
        try:
            lines.append((name, base64.b64decode(blob, validate=True)))
        except (binascii.Error, ValueError):
            raise Bad("a note signature is not base64") from None
    return note[: cut + 1], lines


def open_checkpoint(note: str, key: Ed25519PublicKey) -> tuple[str, int, bytes, str]:
    """(origin, size, root, text) of a checkpoint signed by `key` under its origin."""
    text, lines = split_note(note)
    origin, size, root_b64 = text.split("\n")[:3]
    want = hashlib.sha256(origin.encode() + b"\n\x01" + raw(key)).digest()[:4]
    for name, blob in lines:
        if name == origin and blob[:4] == want:
            try:
                key.verify(blob[4:], text.encode())
            except InvalidSignature:
                raise Bad(f"the gateway's signature on checkpoint {size} does not verify") from None
            root = base64.b64decode(root_b64)
            if len(root) != 32 or not size.isdigit():
                raise Bad("a checkpoint's size or root is malformed")
            return origin, int(size), root, text
    raise Bad(f"checkpoint {size} carries no signature by the gateway's key")


def cosignature_time(note: str, name: str, key: Ed25519PublicKey, text: str) -> int:
    """The time of `name`'s tlog-cosignature/v1 on the note, if it verifies."""
    want = hashlib.sha256(name.encode() + b"\n\x04" + raw(key)).digest()[:4]
    for signer, blob in split_note(note)[1]:
        if signer == name and blob[:4] == want and len(blob) == 76:
            (stamp,) = struct.unpack(">Q", blob[4:12])
            message = f"cosignature/v1\ntime {stamp}\n{text}".encode()
            try:
                key.verify(blob[12:], message)
            except InvalidSignature:
                raise Bad(f"the cosignature by {name} does not verify") from None
            return int(stamp)
    raise Bad(f"no cosignature by {name} on a cosigned checkpoint")


# -- RFC 9162 Merkle trees ------------------------------------------------------------------------


def node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def inclusion_ok(leaf: bytes, index: int, size: int, path: list[bytes], root: bytes) -> bool:
    """RFC 9162 section 2.1.3.2."""
    if not 0 <= index < size:
        return False
    fn, sn, r = index, size - 1, leaf
    for p in path:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node(p, r)
            while fn and not fn & 1:
                fn, sn = fn >> 1, sn >> 1
        else:
            r = node(r, p)
        fn, sn = fn >> 1, sn >> 1
    return sn == 0 and hmac.compare_digest(r, root)


def consistency_ok(m: int, n: int, old: bytes, new: bytes, proof: list[bytes]) -> bool:
    """RFC 9162 section 2.1.4.2."""
    if not 0 < m <= n:
        return False
    if m == n:
        return not proof and hmac.compare_digest(old, new)
    if m & (m - 1) == 0:
        proof = [old, *proof]
    if not proof:
        return False
    fn, sn = m - 1, n - 1
    while fn & 1:
        fn, sn = fn >> 1, sn >> 1
    fr = sr = proof[0]
    for c in proof[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr, sr = node(c, fr), node(c, sr)
            while fn and not fn & 1:
                fn, sn = fn >> 1, sn >> 1
        else:
            sr = node(sr, c)
        fn, sn = fn >> 1, sn >> 1
    return sn == 0 and hmac.compare_digest(fr, old) and hmac.compare_digest(sr, new)


def canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def entry_hash(e: dict[str, Any]) -> str:
    columns = [e["seq"], e["recorded_at"], e["event"], e["run_id"], e["contract_id"], e["body"]]
    return hashlib.sha256(canonical([*columns, e["prev_hash"]])).hexdigest()


# -- the bundle ---------------------------------------------------------------------------------


class Check:
    """Runs every check, collecting failures and what was proven."""

    def __init__(
        self,
        bundle: dict[str, Any],
        pinned: Ed25519PublicKey | None,
        partner_pins: Pinned | None = None,
        approver_pins: tuple[Pinned, set[str]] | None = None,
    ) -> None:
        self.b = bundle
        self.failures: list[str] = []
        self.proven: list[str] = []
        self.gateway = pinned or ssh_key(bundle["gateway"]["key"])
        if pinned is not None and raw(pinned) != raw(ssh_key(bundle["gateway"]["key"])):
            self.failures.append("the bundle names another gateway key than the one pinned")
        listed = {key_id(k): k for k in map(ssh_key, bundle.get("partners", []))}
        self.partner_names: dict[str, str] = {}
        self.partners_from = "the bundle's partner keys"
        self.partners = listed
        if partner_pins is not None:
            # Only the keys the auditor pinned are believed; the bundle's list must agree.
            self.partners = {kid: key for kid, (_, key) in partner_pins.items()}
            self.partner_names = {kid: name for kid, (name, _) in partner_pins.items()}
            self.partners_from = "the partner keys you pinned"
            for kid in sorted(set(listed) - set(self.partners)):
                self.failures.append(
                    f"partners: the bundle lists partner key {kid}, which you did not pin "
                    "with --partner-key"
                )
        self.approver_pins = approver_pins

    def run(self, what: str, step: Any) -> Any:
        try:
            return step()
        except Bad as exc:
            self.failures.append(f"{what}: {exc}")
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            self.failures.append(f"{what}: malformed ({type(exc).__name__})")
        return None

    def checkpoint(self) -> tuple[str, int, bytes, str]:
        origin, size, root, text = open_checkpoint(self.b["checkpoint"], self.gateway)
        if origin != self.b["gateway"]["origin"]:
            raise Bad(f"the checkpoint is of log {origin!r}, not the bundle's")
        return origin, size, root, text

    def entry(self, e: dict[str, Any], size: int, root: bytes) -> dict[str, Any]:
        if e["contract_id"] != self.b["agreement"]:
            raise Bad("an entry of another agreement")
        if entry_hash(e) != e["entry_hash"]:
            raise Bad("its content does not match its hash (edited)")
        leaf = hashlib.sha256(b"\x00" + bytes.fromhex(e["entry_hash"])).digest()
        path = [bytes.fromhex(h) for h in e["inclusion"]]
        if not inclusion_ok(leaf, e["seq"] - 1, size, path, root):
            raise Bad(f"not in the signed tree of size {size} (inclusion proof fails)")
        body: dict[str, Any] = json.loads(e["body"])
        return body

    def ack(self, body: dict[str, Any], sent: dict[str, str]) -> str:
        """Check the partner's own signature on an acknowledgement kept in an entry."""
        kept = body["ack"]
        key = self.partners.get(kept["body"]["key_id"])
        if key is None:
            raise Bad(f"signed by a key that is not among {self.partners_from}")
        try:
            if "signature" in kept:
                key.verify(base64.b64decode(kept["signature"]), canonical(kept["body"]))
            else:  # an OpenSSH-signed bare body: its bytes are kept; check they say the same
                if json.loads(base64.b64decode(kept["file"])) != kept["body"]:
                    raise Bad("the kept file does not hold the acknowledgement's body")
                return "acknowledged (OpenSSH signature kept; check with ssh-keygen -Y verify)"
        except InvalidSignature:
            raise Bad("the partner's signature does not verify") from None
        drop = kept["body"]["drop_id"]
        if sent.get(drop) != kept["body"]["manifest_sha256"]:
            raise Bad(f"acknowledges a manifest of drop {drop} that the bundle does not show sent")
        return drop

    def cosigned(self, c: dict[str, Any], size: int, root: bytes) -> tuple[str, int, int]:
        _, csize, croot, text = open_checkpoint(c["note"], self.gateway)
        key = self.partners.get(c["key_id"])
        if key is None:
            raise Bad(f"cosigned by a key that is not among {self.partners_from}")
        name = "exchange-partner/" + c["key_id"].removeprefix("ed25519:")
        if c["witness"] != name:
            raise Bad("the witness name does not match its key")
        stamp = cosignature_time(c["note"], name, key, text)
        proof = [bytes.fromhex(h) for h in c["consistency"]]
        if not consistency_ok(csize, size, croot, root, proof):
            raise Bad(f"the cosigned tree of size {csize} is not a prefix of the signed tree")
        return self.partner_names.get(c["key_id"], name), csize, stamp

    def contract(self, v: dict[str, Any], approvers: dict[str, tuple[str, Any]]) -> list[str]:
        sha = v["sha256"]
        text = v["canonical"]
        if text is not None and hashlib.sha256(base64.b64decode(text)).hexdigest() != sha:
            raise Bad(f"version {sha[:12]}: the contract text does not match its hash")
        by = []
        for envelope in v["approvals"]:
            body = envelope["body"]
            who = approvers.get(body["key_id"])
            if who is None:
                raise Bad(f"version {sha[:12]}: approved by a key not among the approvers")
            if self.approver_pins is not None and body["key_id"] in self.approver_pins[1]:
                raise Bad(
                    f"version {sha[:12]}: approved by {who[0]}, whose key your approvers file "
                    "revokes"
                )
            try:
                who[1].verify(base64.b64decode(envelope["signature"]), canonical(body))
            except InvalidSignature:
                raise Bad(f"version {sha[:12]}: the approval's signature does not verify") from None
            if body["contract_sha256"] != sha:
                raise Bad(f"version {sha[:12]}: the approval is of another text")
            by.append(f"{who[0]} on {body['at']}")
        return by

    def all(self) -> None:
        head = self.run("checkpoint", self.checkpoint)
        if head is None:
            return
        origin, size, root, _ = head
        self.proven.append(
            f"the gateway key {key_id(self.gateway)} signed log {origin} at {size} entries"
        )
        sent: dict[str, str] = {}
        bodies = []
        for e in self.b["entries"]:
            body = self.run(f"entry {e.get('seq')}", lambda e=e: self.entry(e, size, root))
            if body is not None:
                bodies.append((e, body))
                if e["event"] == "transfer.sent":
                    sent[body["drop_id"]] = body["manifest_sha256"]
        seqs = [e["seq"] for e, _ in bodies]
        self.proven.append(
            f"{len(bodies)} entries of agreement {self.b['agreement']} are in that signed log"
            + (f" (entries {min(seqs)}..{max(seqs)})" if seqs else "")
        )
        self.proven.append(f"{len(sent)} drops sent: {', '.join(sorted(sent)) or 'none'}")
        acked = []
        for e, body in bodies:
            if e["event"] == "ack.received" and "ack" in body:
                got = self.run(
                    f"acknowledgement in entry {e['seq']}", lambda b=body: self.ack(b, sent)
                )
                if got is not None:
                    acked.append(got)
        self.proven.append(
            f"{len(acked)} acknowledgements signed by the partner (with {self.partners_from}): "
            f"{', '.join(acked) or 'none'}"
        )
        receipts = []
        for e, body in bodies:
            if e["event"] == "destruction.received" and "receipt" in body:
                got = self.run(f"receipt in entry {e['seq']}", lambda b=body: self.receipt(b))
                if got is not None:
                    receipts.append(got)
        if receipts:
            self.proven.append(
                f"{len(receipts)} destruction receipts: {', '.join(receipts)} (signed "
                f"with {self.partners_from})"
            )
        for e, body in bodies:
            if e["event"] == "witness.refused" and "report" in body:
                got = self.run(f"refusal in entry {e['seq']}", lambda b=body: self.refusal(b))
                if got is not None:
                    self.proven.append(got)
        for c in self.b.get("cosigned", []):
            got = self.run("cosigned checkpoint", lambda c=c: self.cosigned(c, size, root))
            if got is not None:
                self.proven.append(
                    f"partner {got[0]} cosigned the log at {got[1]} entries (time {got[2]}), "
                    "a prefix of the signed log"
                )
        approvers: Pinned = {}
        for a in self.b.get("approvers", []):
            key = self.run(f"approver {a.get('name')}", lambda a=a: ssh_key(a["key"]))
            if key is not None:
                approvers[key_id(key)] = (a["name"], key)
        source = "approvers from the bundle"
        if self.approver_pins is not None:
            pins = self.approver_pins[0]
            for kid, (name, _) in sorted(approvers.items()):
                if kid not in pins:
                    self.failures.append(
                        f"approvers: the bundle lists approver {name!r} with key {kid}, which "
                        "is not in your approvers file"
                    )
                elif pins[kid][0] != name:
                    self.failures.append(
                        f"approvers: the bundle names key {kid} {name!r}; your approvers file "
                        f"names it {pins[kid][0]!r}"
                    )
            approvers, source = pins, "approvers from your file"
        for v in self.b.get("contracts", []):
            by = self.run("contract", lambda v=v: self.contract(v, approvers))
            if by is not None:
                text = "text included" if v["canonical"] else "text not included"
                self.proven.append(
                    f"contract version {v['sha256'][:12]} ({text}, {source}) approved by: "
                    + ("; ".join(by) or "no approval in the bundle")
                )

    def _partner_signed(self, kept: dict[str, Any]) -> dict[str, Any]:
        """The body of a partner's signed file (`body` and `signature`), once it verifies."""
        key = self.partners.get(kept["body"]["key_id"])
        if key is None:
            raise Bad(f"signed by a key that is not among {self.partners_from}")
        try:
            key.verify(base64.b64decode(kept["signature"]), canonical(kept["body"]))
        except InvalidSignature:
            raise Bad("the partner's signature does not verify") from None
        body: dict[str, Any] = kept["body"]
        return body

    def refusal(self, body: dict[str, Any]) -> str:
        """A partner's signed report that the log it was shown did not extend what it saw."""
        report, sizes = self._partner_signed(body["report"]), []
        for note in ((report.get("held") or {}).get("note"), report.get("offered")):
            try:  # both checkpoints carry the gateway's own signature: evidence against it
                sizes.append(str(open_checkpoint(note, self.gateway)[1]))
            except (Bad, AttributeError, ValueError, TypeError):
                sizes.append("?")
        return (
            f"WARNING: partner {report['key_id']} refused drop {report['drop_id']}: the gateway "
            f"signed a checkpoint of {sizes[1]} entries that does not extend the one of "
            f"{sizes[0]} entries it had signed for that partner"
        )

    def receipt(self, body: dict[str, Any]) -> str:
        """A partner's signed destruction receipt."""
        receipt = self._partner_signed(body["receipt"])
        return f"{receipt['drop_id']} destroyed at {receipt['destroyed_at']}"


def partner_pins(values: list[str]) -> Pinned:
    """--partner-key NAME=FILE options: key id -> (name, key)."""
    pins: Pinned = {}
    for value in values:
        name, sep, file = value.partition("=")
        if not sep or not name or not file:
            raise Bad(f"--partner-key {value!r}: give NAME=FILE")
        try:
            key = ssh_key(Path(file).read_text("utf-8"))
        except (OSError, ValueError, UnicodeDecodeError):
            raise Bad(
                f"--partner-key {name}: {file} is not a readable OpenSSH public key"
            ) from None
        pins[key_id(key)] = (name, key)
    return pins


def approver_pins(path: Path) -> tuple[Pinned, set[str]]:
    """The operator's approvers file: key id -> (name, key), and the revoked key ids."""
    try:
        doc = json.loads(path.read_text("utf-8"))
        pins = {}
        for a in doc["approvers"]:
            key = ssh_key(a["key"])
            pins[key_id(key)] = (str(a["name"]), key)
        return pins, {str(r) for r in doc.get("revoked", [])}
    except (OSError, ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError, Bad):
        raise Bad(f"--approvers {path}: not a readable approvers file") from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--gateway-key", type=Path, help="the gateway's published public key")
    parser.add_argument(
        "--partner-key",
        action="append",
        default=[],
        metavar="NAME=FILE",
        help="a partner's public key you trust (repeat for each key)",
    )
    parser.add_argument(
        "--approvers", type=Path, help="a trusted copy of the operator's approvers JSON file"
    )
    args = parser.parse_args(argv)
    try:
        partners = partner_pins(args.partner_key) if args.partner_key else None
        approvers = approver_pins(args.approvers) if args.approvers else None
    except Bad as exc:
        print(str(exc), file=sys.stderr)
        return 2
    try:
        bundle = json.loads(args.bundle.read_text("utf-8"))
        if not isinstance(bundle, dict) or bundle.get("format") != FORMAT:
            raise ValueError
        pinned = ssh_key(args.gateway_key.read_text()) if args.gateway_key else None
        check = Check(bundle, pinned, partners, approvers)
    except (OSError, ValueError, KeyError, TypeError, Bad):
        print(f"not an {FORMAT} file (or an unreadable key): {args.bundle}", file=sys.stderr)
        return 2
    check.all()
    print(f"bundle of agreement {bundle.get('agreement')}, made {bundle.get('created_at')}")
    for line in check.proven:
        print(f"  proven: {line}")
    if not args.gateway_key:
        print("  note: the gateway key was taken from the bundle; pin it with --gateway-key")
    if partners is None:
        print(
            "  note: the partner keys were taken from the bundle, so what they are said to have "
            "signed is only as trustworthy as the bundle's maker; pin them with "
            "--partner-key NAME=FILE"
        )
    if approvers is None:
        print(
            "  note: the approvers' keys were taken from the bundle, so the approvals are only "
            "as trustworthy as the bundle's maker; check them with --approvers FILE (a copy of "
            "the operator's approvers file you trust)"
        )
    print("  note: inclusion proves each entry is in the log, not that none was left out")
    for line in check.failures:
        print(f"  FAILED: {line}")
    print("VERIFIED" if not check.failures else f"NOT VERIFIED: {len(check.failures)} failures")
    return 0 if not check.failures else 1


if __name__ == "__main__":
    sys.exit(main())
