"""The raw chain's first link: pyarrow streams only the named columns of a CSV to stdout as CSV.

    python benchmarks/_raw_chain.py SOURCE.csv col1,col2,...  | age -r KEY -o OUT

Used by exchange_vs_raw.py as the floor an exchange is compared with.
"""

from __future__ import annotations

import sys

import pyarrow.csv as pacsv


def main() -> None:
    source, columns = sys.argv[1], sys.argv[2].split(",")
    reader = pacsv.open_csv(
        source,
        parse_options=pacsv.ParseOptions(newlines_in_values=True),
        convert_options=pacsv.ConvertOptions(include_columns=columns),
    )
    out = sys.stdout.buffer
    with pacsv.CSVWriter(out, reader.schema) as writer:
        for batch in reader:
            writer.write_batch(batch)


if __name__ == "__main__":
    main()
