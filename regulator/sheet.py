"""A district's table as header and rows, from a CSV or XLSX file it already keeps: nothing more.

Hostile files are refused before they cost much: a file over MAX_BYTES, an XLSX whose parts
unzip to more than MAX_UNZIPPED_BYTES (a zip bomb), more than MAX_ROWS rows, a cell over
MAX_CELL_CHARS. What the file is comes from its bytes, not its name: an old .xls, a ZIP that is
no workbook, or a binary file is named as such. Formulas are never evaluated: openpyxl gives a
formula cell's text ("=SUM(A1:A3)") and that text is the value, as a CSV's would be.
A CSV saved by Excel on a Chinese Windows is GB 18030 (GBK), not UTF-8: both are read.
"""

from __future__ import annotations

import csv
import datetime
import io
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MAX_BYTES = 20 * 1024 * 1024  # a city's units, one row per detector, fit many times over
MAX_UNZIPPED_BYTES = 200 * 1024 * 1024
MAX_ROWS = 100_000
MAX_CELL_CHARS = 1000
MAX_COLUMNS = 100  # a sheet declaring 16,384 columns is read this wide only
Cell = str | int | float | bool | datetime.date | datetime.datetime | datetime.time | None


class SheetError(ValueError):
    """Not a table this import can read (exit 2): the message says what the file is instead."""


@dataclass
class Sheet:
    kind: str  # "csv" or "xlsx"
    header: list[str]
    rows: list[tuple[int, list[Cell]]]  # (row number as a spreadsheet shows it, cells)


def read(path: Path) -> Sheet:
    try:
        size = path.stat().st_size
    except OSError as e:
        raise SheetError("%s: %s" % (path, e.strerror or e)) from None
    if path.is_dir():
        raise SheetError("%s: a directory, not a CSV or XLSX file" % path)
    if size > MAX_BYTES:
        raise SheetError(
            "%s: %d bytes, over the %d MiB an import takes: split it by district"
            % (path, size, MAX_BYTES // (1024 * 1024))
        )
    try:
        with path.open("rb") as f:
            head = f.read(8)
    except OSError as e:
        raise SheetError("%s: %s" % (path, e.strerror or e)) from None
    if head.startswith(b"PK\x03\x04"):
        return _xlsx(path)
    if head.startswith(b"\xd0\xcf\x11\xe0"):
        raise SheetError("%s: an Excel 97-2003 (.xls) workbook: save it as .xlsx or CSV" % path)
    return _csv(path, path.read_bytes())


def _csv(path: Path, data: bytes) -> Sheet:
    if b"\x00" in data:
        raise SheetError("%s: a binary file, not a CSV or XLSX table" % path)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        try:
            text = data.decode("gb18030")
        except UnicodeDecodeError:
            raise SheetError("%s: neither UTF-8 nor GB 18030 text: not a CSV" % path) from None
    first = text.split("\n", 1)[0]
    delimiter = max(",\t;", key=first.count)  # Excel writes ";" in some locales, tabs when asked
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    rows: list[tuple[int, list[Cell]]] = []
    header: list[str] | None = None
    old = csv.field_size_limit(MAX_CELL_CHARS + 1)
    try:
        for n, record in enumerate(reader, start=1):
            if header is None:
                header = record
                continue
            _row_cap(n, path)
            cells: list[Cell] = []
            for value in record:
                cells.append(_cap(value, n, path))
            rows.append((n, cells))
    except csv.Error as e:
        raise SheetError(
            "%s: row %d: not readable as CSV: %s (a cell over %d characters?)"
            % (path, reader.line_num, e, MAX_CELL_CHARS)
        ) from None
    finally:
        csv.field_size_limit(old)
    if header is None:
        raise SheetError("%s: empty: no header row" % path)
    return Sheet("csv", header, rows)


def _xlsx(path: Path) -> Sheet:
    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
            unzipped = sum(i.file_size for i in z.infolist())
    except zipfile.BadZipFile as e:
        raise SheetError("%s: a damaged ZIP, not a readable XLSX: %s" % (path, e)) from None
    if "xl/workbook.xml" not in names:
        raise SheetError("%s: a ZIP file but not an XLSX workbook" % path)
    if unzipped > MAX_UNZIPPED_BYTES:
        raise SheetError(
            "%s: unzips to %d bytes, over the %d MiB an import takes"
            % (path, unzipped, MAX_UNZIPPED_BYTES // (1024 * 1024))
        )
    import openpyxl

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "no default style" and the like: not the user's
            # read_only streams the rows; data_only=False: a formula is its text, never a value
            # some other program computed and cached
            wb = openpyxl.load_workbook(path, read_only=True, data_only=False)
    except Exception as e:  # noqa: BLE001 - openpyxl raises many kinds for a broken workbook
        raise SheetError("%s: not a readable XLSX workbook: %s" % (path, e)) from None
    try:
        ws = wb.worksheets[0]
        width = ws.max_column  # from the sheet's declared dimension: rows are padded to it
        width = min(width, MAX_COLUMNS) if isinstance(width, int) and width > 0 else MAX_COLUMNS
        header: list[str] | None = None
        rows: list[tuple[int, list[Cell]]] = []
        for n, values in enumerate(ws.iter_rows(max_col=width, values_only=True), start=1):
            if header is None:
                if all(v is None for v in values):
                    continue  # a blank line above the header
                header = ["" if v is None else str(_value(v, n, path)) for v in values]
                first = n
                continue
            _row_cap(n - first + 1, path)
            rows.append((n, [_value(v, n, path) for v in values]))
    except SheetError:
        raise
    except Exception as e:  # noqa: BLE001
        raise SheetError("%s: not a readable XLSX workbook: %s" % (path, e)) from None
    finally:
        wb.close()
    if header is None:
        raise SheetError("%s: its first sheet is empty: no header row" % path)
    return Sheet("xlsx", header, rows)


def _row_cap(n: int, path: Path) -> None:
    if n > MAX_ROWS + 1:
        raise SheetError("%s: over %d rows: split it by district" % (path, MAX_ROWS))


def _cap(v: str, n: int, path: Path) -> str:
    if len(v) > MAX_CELL_CHARS:
        raise SheetError(
            "%s: row %d: a cell of %d characters (at most %d)" % (path, n, len(v), MAX_CELL_CHARS)
        )
    return v


def _value(v: Any, n: int, path: Path) -> Cell:
    if v is None or isinstance(v, bool | int | float | datetime.date | datetime.time):
        return v
    if isinstance(v, str):
        return _cap(v, n, path)
    # an array or data-table formula: its text, like any other formula
    return _cap(str(getattr(v, "text", v)), n, path)


def blank(cell: Cell) -> bool:
    return cell is None or (isinstance(cell, str) and not cell.strip())
