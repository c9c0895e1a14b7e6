"""Write (or check) the files generated from the registries: schemas and docs tables.

python -m exchange.contract.vocabulary.generate          # rewrite them
python -m exchange.contract.vocabulary.generate --check  # exit 1 if any is stale
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from pathlib import Path

from exchange.contract.legal import STATUTES
from exchange.contract.vocabulary.schemas import (
    field_terms_text,
    manifest_schema_text,
    sharing_terms_text,
)
from exchange.contract.vocabulary.terms import TERMS
from exchange.contract.vocabulary.transforms import TRANSFORMS
from exchange.contract.vocabulary.units import UNITS

ROOT = Path(__file__).resolve().parents[3]
_BLOCK = re.compile(r"(<!-- generated: (\w+) -->\n).*?(<!-- end generated -->)", re.S)


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def terms_table() -> str:
    """The sharing-terms table of docs/contracts.md."""
    rows = [f"| `{t.name}` | {_cell(t.docs)} | {t.required} |" for t in TERMS.values()]
    return "\n".join(["| property | type and meaning | required |", "| --- | --- | --- |", *rows])


def transforms_table() -> str:
    """The transforms reference table of docs/contracts.md."""
    rows = []
    for s in TRANSFORMS.values():
        output = sorted({t or "as the field" for t in s.outputs.values()})
        reads = s.reads_as or "the field's type"
        accepts = f" ({' or '.join(s.accepts)} fields)" if s.accepts else ""
        rows.append(f"| `{s.name}` | {_cell(s.sends)} | {reads}{accepts} | {', '.join(output)} |")
    header = [
        "| transform | sends | reads the source as | logicalType |",
        "| --- | --- | --- | --- |",
    ]
    return "\n".join([*header, *rows])


def units_line() -> str:
    """The retention units sentence of docs/contracts.md."""
    spelled = "; ".join(f"{u.name}: {', '.join(f'`{s}`' for s in u.spellings)}" for u in UNITS)
    return f"Retention units ({spelled}). No unit means days; a month is a twelfth of a year."


def powers_table() -> str:
    """The statutory powers table of docs/contracts.md."""
    rows = [
        f"| {_cell(p.act)} | {_cell(p.section)} | {_cell(p.description)} | "
        f"{'yes' if p.overrides_objection else 'no'} |"
        for p in STATUTES
    ]
    header = [
        "| act | section | what it permits | overrides an objection |",
        "| --- | --- | --- | --- |",
    ]
    return "\n".join([*header, *rows])


BLOCKS: dict[str, Callable[[], str]] = {
    "powers": powers_table,
    "terms": terms_table,
    "transforms": transforms_table,
    "units": units_line,
}


def docs_text(text: str) -> str:
    """docs/contracts.md with every generated block rewritten from the registries."""
    return _BLOCK.sub(lambda m: m.group(1) + BLOCKS[m.group(2)]() + "\n" + m.group(3), text)


def outputs() -> dict[Path, str]:
    """Every generated file and the text it should have."""
    out = {
        ROOT / "exchange/contract/terms.schema.json": sharing_terms_text(),
        ROOT / "exchange/contract/field-terms.schema.json": field_terms_text(),
    }
    for name in ("exchange/manifest.schema.json", "docs/manifest.schema.json"):
        path = ROOT / name
        out[path] = manifest_schema_text(path.read_text("utf-8"))
    docs = ROOT / "docs/contracts.md"
    out[docs] = docs_text(docs.read_text("utf-8"))
    return out


def stale() -> list[Path]:
    """The generated files that differ from what the registries give."""
    return [p for p, text in outputs().items() if not p.is_file() or p.read_text("utf-8") != text]


def main(argv: list[str]) -> int:
    """Rewrite the generated files, or with --check list the stale ones and exit 1."""
    if "--check" in argv:
        late = stale()
        for path in late:
            print(f"{path.relative_to(ROOT)}: out of date with the registries", file=sys.stderr)
        return 1 if late else 0
    for path, text in outputs().items():
        path.write_text(text, "utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
