"""Fetch GOV.UK Frontend and axe-core from the npm registry, check their pinned digests, unpack.

GOV.UK Frontend's stylesheet, fonts and images go to exchange_airflow/static/govuk (served by
the Exchanges view; git-ignored); axe-core's script goes to build/vendor (injected by the
browser tests only). A tarball whose digest differs from its pin is refused before unpacking.

    python scripts/vendor_frontend.py [--offline]
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import io
import sys
import tarfile
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / "build" / "vendor"
STATIC = ROOT / "exchange_airflow" / "static" / "govuk"
REGISTRY = "https://registry.npmjs.org"

# name -> (version, the registry's sha512 "integrity" for its tarball)
PINS = {
    "govuk-frontend": (
        "6.6.0",
        "xctkWrQvLnvQt7fyjQ3MGX9S0wz0x0RQuLxCeoXF+s8EjGICG81/DYQGKN5qgO+0KVT12UAaRwUsGY6fulRcRg==",
    ),
    "axe-core": (
        "4.14.1",
        "FHfa+lmNjQZfJz1q8wKqIDwC6DExcHt/pkjNQb09a3NPjCKg2rhu5qb2S4r76ASyFNNtuFooJpZe37OgudVGtQ==",
    ),
}
# What is taken from each tarball: member prefix inside it -> folder it lands in.
TAKE = {
    "govuk-frontend": {
        "package/dist/govuk/govuk-frontend.min.css": STATIC,
        "package/dist/govuk/assets/": STATIC / "assets",
    },
    "axe-core": {"package/axe.min.js": CACHE / "axe-core"},
}


class VendorError(Exception):
    """A tarball could not be fetched, or is not the one pinned."""


def tarball(name: str, *, offline: bool = False) -> bytes:
    """The pinned tarball of `name`, from the cache or the registry, its digest checked."""
    version, integrity = PINS[name]
    cached = CACHE / f"{name}-{version}.tgz"
    if cached.exists():
        data = cached.read_bytes()
    elif offline:
        raise VendorError(f"{cached} is missing and --offline was given: run without it once")
    else:
        url = f"{REGISTRY}/{name}/-/{name}-{version}.tgz"
        try:
            with urllib.request.urlopen(url, timeout=60) as response:  # noqa: S310 (https, fixed)
                data = response.read()
        except OSError as exc:
            raise VendorError(f"cannot fetch {url}: {exc}; check the network and retry") from exc
    digest = base64.b64encode(hashlib.sha512(data).digest()).decode()
    if digest != integrity:
        raise VendorError(
            f"{name} {version}: sha512 {digest} is not the pinned {integrity}; nothing was "
            "unpacked (delete build/vendor to fetch it again, or review the pin)"
        )
    CACHE.mkdir(parents=True, exist_ok=True)
    cached.write_bytes(data)
    return data


def unpack(name: str, data: bytes) -> list[Path]:
    """Write the members `TAKE` names, refusing links and any path that climbs out."""
    written = []
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        for member in tar.getmembers():
            for prefix, dest in TAKE[name].items():
                if not member.isfile() or not member.name.startswith(prefix):
                    continue
                rest = member.name[len(prefix) :] or Path(prefix).name
                target = (dest / rest).resolve()
                if not target.is_relative_to(dest.resolve()):
                    raise VendorError(f"{name}: member {member.name!r} leaves {dest}")
                source = tar.extractfile(member)
                assert source is not None  # a regular file
                target.parent.mkdir(parents=True, exist_ok=True)
                body = source.read()
                if target.suffix == ".css":  # served under the view's prefix, not at /assets
                    body = body.replace(b"url(/assets/", b"url(assets/")
                target.write_bytes(body)
                written.append(target)
    if not written:
        raise VendorError(f"{name}: none of {sorted(TAKE[name])} in the tarball")
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--offline", action="store_true", help="use only cached tarballs")
    args = parser.parse_args(argv)
    try:
        for name in PINS:
            files = unpack(name, tarball(name, offline=args.offline))
            print(f"{name} {PINS[name][0]}: {len(files)} file(s), sha512 checked")
    except VendorError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
