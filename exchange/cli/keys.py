"""Everyone's key commands: `keys generate | rotate`."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from exchange.cli._common import OK, passphrase, passphrase_options, say
from exchange.errors import CryptoError
from exchange.settings import Settings

if TYPE_CHECKING:
    from exchange.cli._common import Subcommands


def cmd_keys_generate(args: argparse.Namespace) -> int:
    """Generate a key pair."""
    from exchange.keys import generate

    secret = passphrase(args, confirm=True)
    if secret is not None and args.kind == "age":
        raise CryptoError("age identities are not passphrase-protected here; keep the file 0600")
    pair = generate(
        args.kind, args.out, comment=args.comment or "", overwrite=args.force, passphrase=secret
    )
    say(f"private key: {pair.private_path} (0600)\npublic key:  {pair.public_path}")
    say(pair.public)
    return OK


def cmd_keys_rotate(args: argparse.Namespace) -> int:
    """Replace a pseudonymisation (or disclosure) key with a new random one; audited."""
    import secrets as random_source

    from exchange.audit import Ledger
    from exchange.gateway import DISCLOSURE_KEY
    from exchange.secrets import LocalSecrets
    from exchange.transforms import key_id

    settings = Settings.from_env()
    new = random_source.token_bytes(32)
    old = LocalSecrets.from_settings(settings).rotate(args.secret, new)
    if args.secret == DISCLOSURE_KEY and old:
        # Disclosures recorded under the old key must stay answerable.
        LocalSecrets.from_settings(settings).rotate(f"{DISCLOSURE_KEY}-old", old)
    if args.secret == DISCLOSURE_KEY:
        from exchange.audit.disclosures import key_id as fingerprint
    else:
        fingerprint = key_id
    body = {
        "secret": args.secret,
        "old_key_id": fingerprint(old) if old else None,
        "new_key_id": fingerprint(new),
        "reason": args.reason,
    }
    Ledger(settings.audit_url).append("key.rotated", body)
    say(f"rotated {args.secret}: key id {body['old_key_id']} -> {body['new_key_id']}")
    return OK


def add_keys(sub: Subcommands) -> None:
    """`exchange keys ...`."""
    keys = sub.add_parser("keys", help="key pairs").add_subparsers(dest="action", required=True)
    gen = keys.add_parser("generate", help="generate a key pair")
    gen.add_argument("--kind", choices=("signing", "age", "ssh"), required=True)
    gen.add_argument("--out", type=Path, required=True, help="private key path (.pub beside it)")
    gen.add_argument("--comment")
    gen.add_argument("--force", action="store_true", help="overwrite existing files")
    passphrase_options(gen)
    gen.set_defaults(func=cmd_keys_generate)

    rotate = keys.add_parser("rotate", help="replace a secret key (pseudonymisation, disclosure)")
    rotate.add_argument("secret", help="the secret's name, e.g. a contract's pseudonymisationKey")
    rotate.add_argument("--reason", required=True, help="why (recorded in the audit ledger)")
    rotate.set_defaults(func=cmd_keys_rotate)
