"""Read users' own dialogues (JSONL / JSON / CSV / Hugging Face datasets) and write them back as JSONL.

A :class:`DatasetSpec` says where the data lives and which columns hold prompt, response and system prompt.
Every bad input raises :class:`~unlearnlm.errors.DataError` naming the file, the 1-based line (or 0-based
dataset row), what is wrong and how to fix it. ``meta`` gets ``source`` (the path) and ``row`` (0-based).
"""

from __future__ import annotations

import csv
import difflib
import io
import json
import os
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, get_args

from unlearnlm.data.records import Dialogue
from unlearnlm.errors import DataError

Format = Literal["auto", "jsonl", "csv", "hf"]
_SUFFIX_FORMATS: dict[str, Literal["jsonl", "csv"]] = {".jsonl": "jsonl", ".json": "jsonl", ".csv": "csv"}
_FILE_SUFFIXES = {*_SUFFIX_FORMATS, ".tsv", ".txt", ".parquet", ".arrow", ".xlsx"}  # never a dataset id
_SAVED_MARKERS = (("dataset_info.json", "state.json"), ("dataset_dict.json",))  # Dataset, DatasetDict
_RESERVED_META = ("source", "row")
_RECODE_HINT = "re-encode it as UTF-8, e.g. `iconv -f latin1 -t utf-8 in.csv > out.csv` or Excel's 'CSV UTF-8'"


@dataclass
class DatasetSpec:
    """Where a set of dialogues comes from and how its columns map onto Dialogue fields."""

    path: str
    """A .jsonl/.json/.csv file, a ``datasets.save_to_disk`` folder, or a HF dataset id / loader name."""
    format: Format = "auto"
    """``auto`` picks by suffix; a folder holding a saved dataset is read with ``load_from_disk``; else ``hf``."""
    prompt_column: str = "prompt"
    """Column holding the user turn (required, non-empty in every row)."""
    response_column: str | None = "response"
    """Column holding the assistant turn; ``None`` for prompt-only data (responses generated later)."""
    system_column: str | None = None
    """Optional column holding a per-row system prompt."""
    split: str = "train"
    """Split to read from a HF dataset (or from a saved ``DatasetDict``)."""
    name: str | None = None
    """HF dataset configuration name."""
    limit: int | None = None
    """Keep only the first N rows after loading; ``None`` keeps all."""
    require_response: bool = False
    """Treat an empty or missing response as an error (for data used as training targets)."""
    meta_columns: list[str] = field(default_factory=list)
    """Extra columns copied into ``Dialogue.meta`` under their own names."""

    def __post_init__(self) -> None:
        if isinstance(self.path, os.PathLike):
            self.path = os.fspath(self.path)
        if not isinstance(self.path, str) or not self.path.strip():
            raise DataError(f"dataset `path` must be a non-empty string, got {self.path!r}; name a file or dataset id")
        where = f"dataset spec for {self.path}"
        if self.format not in get_args(Format):
            raise DataError(f"{where}: unknown format {self.format!r}; set `format` to one of {list(get_args(Format))}")
        for key in ("prompt_column", "response_column", "system_column", "split", "name"):
            value = getattr(self, key)
            if (value is not None or key in ("prompt_column", "split")) and not (isinstance(value, str) and value):
                raise DataError(f"{where}: `{key}` must be a non-empty string, got {value!r}")
        if self.limit is not None and (type(self.limit) is not int or self.limit <= 0):  # bool is not a count
            raise DataError(f"{where}: `limit` must be a positive integer or null (all rows), got {self.limit!r}")
        if self.require_response and self.response_column is None:
            raise DataError(f"{where}: `require_response` is true but `response_column` is null; name that column")
        if isinstance(self.meta_columns, str) or not all(isinstance(c, str) and c for c in self.meta_columns):
            raise DataError(f"{where}: `meta_columns` must be a list of column names, got {self.meta_columns!r}")
        self.meta_columns = list(self.meta_columns)
        if reserved := [c for c in self.meta_columns if c in _RESERVED_META]:
            raise DataError(f"{where}: `meta_columns` may not contain {reserved}; the reader sets meta['source'] "
                            f"and meta['row'] itself, so rename that column in the data")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DatasetSpec:
        """Build a spec from a mapping (e.g. a YAML section), rejecting unknown keys.

        Args:
            data: keys named like this class's fields; ``path`` is required.

        Raises:
            DataError: ``data`` is not a mapping, has unknown keys, lacks ``path`` or holds an invalid value.
        """
        if not isinstance(data, Mapping):
            raise DataError(f"a dataset spec must be a mapping with a `path` key, got {type(data).__name__} {data!r}")
        valid = [f.name for f in fields(cls)]
        if unknown := [k for k in data if k not in valid]:
            hints = [f"{k!r}: did you mean {close[0]!r}?" for k in unknown
                     if (close := difflib.get_close_matches(str(k), valid, n=1))]
            guess = f" ({'; '.join(hints)})" if hints else ""
            raise DataError(f"dataset spec has unknown key(s) {unknown}; valid keys are {valid}{guess}")
        if "path" not in data:
            raise DataError(f"dataset spec {dict(data)!r} has no `path`; set it to a file, saved folder or dataset id")
        return cls(**data)


def read_dialogues(spec: DatasetSpec) -> list[Dialogue]:
    """Read the dialogues a spec points at.

    Args:
        spec: where the data is and how its columns map onto :class:`Dialogue` fields.

    Returns:
        The first ``spec.limit`` (or all) dialogues, in file order, each with ``meta['source']`` and
        ``meta['row']`` set, plus ``spec.meta_columns`` and any JSON object found in a ``meta`` column.

    Raises:
        DataError: the data is missing, unreadable, or does not match the spec (see the message).
    """
    kind = _resolve_format(spec)
    if kind == "hf":
        return _read_hf(spec)
    text = _read_text(Path(spec.path))
    if kind == "csv":
        return _read_csv_text(spec, text)
    if spec.path.lower().endswith(".json") and text.lstrip().startswith("["):
        return _convert(spec, _json_array_rows(spec.path, text), upfront_columns=None)
    return _convert(spec, _jsonl_rows(spec.path, text), upfront_columns=None)


def read_jsonl(path: str | os.PathLike[str], **mapping: Any) -> list[Dialogue]:
    """Read a JSON Lines file; ``mapping`` takes any other :class:`DatasetSpec` field (``prompt_column=...``)."""
    return read_dialogues(DatasetSpec.from_dict(_with_format(path, "jsonl", mapping)))


def read_csv(path: str | os.PathLike[str], **mapping: Any) -> list[Dialogue]:
    """Read a CSV file with a header row; ``mapping`` takes any other :class:`DatasetSpec` field."""
    return read_dialogues(DatasetSpec.from_dict(_with_format(path, "csv", mapping)))


def write_jsonl(path: str | os.PathLike[str], dialogues: Iterable[Dialogue]) -> Path:
    """Write dialogues as JSON Lines, atomically: readers see the old file or the whole new one.

    Lines are written to a temporary file in the same folder, synced, then moved over ``path`` with
    :func:`os.replace`. On any failure the temporary file is removed and ``path`` is left untouched.

    Args:
        path: destination file; missing parent folders are created.
        dialogues: records to write, one :meth:`Dialogue.to_json` object per line.

    Returns:
        The destination path.

    Raises:
        DataError: a dialogue cannot be serialised (e.g. a ``meta`` value that is not JSON).
    """
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex[:8]}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # umask applies, like open(..., "w")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as out:
            for i, dialogue in enumerate(dialogues):
                try:
                    line = json.dumps(dialogue.to_json(), ensure_ascii=False)
                except (TypeError, ValueError) as exc:
                    raise DataError(f"{dest}: dialogue {i} cannot be written as JSON ({exc}); keep meta values "
                                    f"to str/int/float/bool/None/list/dict, e.g. convert sets to lists") from exc
                out.write(line + "\n")
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return dest


# --------------------------------------------------------------------------------------------------
# locating and decoding


def _with_format(path: str | os.PathLike[str], fmt: str, mapping: dict[str, Any]) -> dict[str, Any]:
    if "format" in mapping:
        raise DataError(f"read_{fmt}() fixes format={fmt!r}; use read_dialogues(DatasetSpec(...)) to choose another")
    return {**mapping, "path": os.fspath(path), "format": fmt}


def _is_saved_dataset(folder: Path) -> bool:
    return any(all((folder / name).is_file() for name in marker) for marker in _SAVED_MARKERS)


def _resolve_format(spec: DatasetSpec) -> Literal["jsonl", "csv", "hf"]:
    """The reader to use; file formats are checked to point at an existing file."""
    path = Path(spec.path).expanduser()
    suffix = path.suffix.lower()
    fmt = spec.format
    if fmt == "auto":
        if path.is_dir() and suffix not in _SUFFIX_FORMATS:
            return "hf"
        looks_local = suffix in _FILE_SUFFIXES or spec.path.startswith((".", "/", "~")) or os.path.isabs(spec.path)
        if not path.exists() and not looks_local:
            return "hf"  # a dataset id such as "org/name" or a loader name such as "json"
        if suffix not in _SUFFIX_FORMATS and path.exists():
            raise DataError(f"{spec.path}: unknown suffix {suffix or '(none)'!r}; expected .jsonl, .json or .csv. "
                            f"Rename the file, or set `format` to 'jsonl', 'csv' or 'hf'")
        fmt = _SUFFIX_FORMATS.get(suffix, "jsonl")  # a missing file: reported just below
    if fmt == "hf":
        return "hf"
    if not path.exists():
        raise DataError(f"{spec.path}: file not found (cwd: {Path.cwd()}); check the path")
    if path.is_dir():
        hint = ("it is a saved dataset: set `format: hf` or drop the file suffix from the path"
                if _is_saved_dataset(path) else f"point `path` at the {fmt} file inside it")
        raise DataError(f"{spec.path}: is a directory, expected a {fmt} file; {hint}")
    return fmt


def _read_text(path: Path) -> str:
    try:
        raw = path.expanduser().read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read the file ({exc.strerror}); check its permissions") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise DataError(f"{path}:{line}: byte {raw[exc.start]:#04x} at offset {exc.start} is not valid UTF-8; "
                        f"{_RECODE_HINT}") from None
    return text.removeprefix("\ufeff")  # a BOM (Excel, Notepad) is not part of the first column name


# --------------------------------------------------------------------------------------------------
# rows: (location for messages, record) pairs


def _jsonl_rows(path: str, text: str) -> Iterator[tuple[str, dict[str, Any]]]:
    for number, line in enumerate(text.split("\n"), start=1):  # not splitlines(): JSON may hold U+2028
        line = line.rstrip("\r")
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            excerpt = line[:60] + ("..." if len(line) > 60 else "")
            hint = (" If the file is one JSON array, give it a .json suffix." if line.strip() in ("[", "{") else "")
            raise DataError(f"{where}: invalid JSON at column {exc.colno} ({exc.msg}): {excerpt!r}. Each line must "
                            f"be one complete JSON object, e.g. {{\"prompt\": \"...\"}}.{hint}") from None
        if not isinstance(record, dict):
            raise DataError(f"{where}: line is {_kind(record)}, expected a JSON object such as "
                            f"{{\"prompt\": \"...\", \"response\": \"...\"}}")
        yield where, record


def _json_array_rows(path: str, text: str) -> Iterator[tuple[str, dict[str, Any]]]:
    try:
        items = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}:{exc.lineno}: invalid JSON at column {exc.colno} ({exc.msg}); "
                        f"fix the file or convert it to JSON Lines (.jsonl)") from None
    for i, record in enumerate(items):
        where = f"{path} item {i} (0-based)"
        if not isinstance(record, dict):
            raise DataError(f"{where}: item is {_kind(record)}, expected an object such as {{\"prompt\": \"...\"}}")
        yield where, record


def _read_csv_text(spec: DatasetSpec, text: str) -> list[Dialogue]:
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader, None)
    except csv.Error as exc:
        raise DataError(f"{spec.path}:1: malformed CSV header ({exc}); check quoting") from None
    if header is None:
        raise DataError(f"{spec.path}: file is empty; add a header row (e.g. prompt,response) and at least one row")
    if dupes := sorted({c for c in header if header.count(c) > 1}):
        raise DataError(f"{spec.path}:1: header repeats column(s) {dupes}; give every column a unique name")

    def rows() -> Iterator[tuple[str, dict[str, Any]]]:
        start = reader.line_num + 1
        while True:
            try:
                values = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                raise DataError(f"{spec.path}:{start}: malformed CSV ({exc}); check quotes around this row") from None
            where, start = f"{spec.path}:{start}", reader.line_num + 1
            if not values:
                continue  # blank line
            if len(values) != len(header):
                raise DataError(f"{where}: row has {len(values)} fields but the header has {len(header)}; "
                                f"quote fields that contain commas or line breaks")
            yield where, dict(zip(header, values))

    return _convert(spec, rows(), upfront_columns=(f"{spec.path}:1 (header)", header))


def _read_hf(spec: DatasetSpec) -> list[Dialogue]:
    import datasets  # heavy import, only when needed

    local = Path(spec.path).expanduser()
    try:
        if local.is_dir() and _is_saved_dataset(local):
            data = datasets.load_from_disk(str(local))
        else:
            data = datasets.load_dataset(spec.path, spec.name, split=spec.split)
    except Exception as exc:  # the datasets library raises many unrelated types; all mean "cannot load"
        raise DataError(f"{spec.path}: cannot load dataset (name={spec.name!r}, split={spec.split!r}): "
                        f"{type(exc).__name__}: {exc}. Check the id, `name` and `split`; on an offline machine "
                        f"use a local path (.jsonl/.csv file or a `save_to_disk` folder)") from exc
    if isinstance(data, datasets.DatasetDict):  # a saved DatasetDict
        if spec.split not in data:
            raise DataError(f"{spec.path}: no split {spec.split!r} in the saved dataset; "
                            f"set `split` to one of {list(data)}")
        data = data[spec.split]
    if not isinstance(data, datasets.Dataset):
        raise DataError(f"{spec.path}: loaded a {type(data).__name__}, expected one split; set `split`")
    if spec.limit is not None:
        data = data.select(range(min(spec.limit, len(data))))
    wanted = [spec.prompt_column, spec.response_column, spec.system_column, *spec.meta_columns, "meta"]
    keep = [c for c in dict.fromkeys(wanted) if c in data.column_names]
    rows = ((f"{spec.path} row {i} (0-based)", row) for i, row in enumerate(data.select_columns(keep)))
    return _convert(spec, rows, upfront_columns=(spec.path, list(data.column_names)))


# --------------------------------------------------------------------------------------------------
# records -> dialogues


def _convert(spec: DatasetSpec, rows: Iterable[tuple[str, dict[str, Any]]],
             upfront_columns: tuple[str, list[str]] | None) -> list[Dialogue]:
    """Map records to dialogues; ``upfront_columns`` is (where, names) when the schema is known before rows."""
    optional = {"response_column": spec.response_column, "system_column": spec.system_column}
    optional |= {f"meta_columns ({c!r})": c for c in spec.meta_columns}
    optional = {key: col for key, col in optional.items() if col is not None}
    if upfront_columns is not None:
        where, names = upfront_columns
        for key, col in {"prompt_column": spec.prompt_column, **optional}.items():
            if col not in names:
                raise _missing_column(where, col, key, names)
    seen: set[str] = set()
    out: list[Dialogue] = []
    for where, record in rows:
        seen.update(record)
        if spec.prompt_column not in record:
            raise _missing_column(where, spec.prompt_column, "prompt_column", list(record))
        prompt = _text(record[spec.prompt_column], spec.prompt_column, "prompt_column", where)
        if prompt is None or not prompt.strip():
            raise DataError(f"{where}: empty prompt in column {spec.prompt_column!r}; fill it in or delete the row")
        response = ""
        if spec.response_column is not None:
            response = _text(record.get(spec.response_column), spec.response_column, "response_column", where) or ""
            if spec.require_response and not response.strip():
                raise DataError(f"{where}: empty or missing response in column {spec.response_column!r}; fill it "
                                f"in, delete the row, or set `require_response: false` to generate responses later")
        system = None
        if spec.system_column is not None:
            system = _text(record.get(spec.system_column), spec.system_column, "system_column", where)
        meta = dict(record["meta"]) if isinstance(record.get("meta"), dict) else {}
        meta |= {c: record[c] for c in spec.meta_columns if c in record}
        meta |= {"source": spec.path, "row": len(out)}
        out.append(Dialogue(prompt=prompt, response=response, system=system, meta=meta))
        if spec.limit is not None and len(out) >= spec.limit:
            break  # before the next row is parsed: rows past the limit are never checked
    if not out:
        raise DataError(f"{spec.path}: no rows to read (0 dialogues); add at least one row with a "
                        f"{spec.prompt_column!r} value, or point `path` at another file")
    for key, col in optional.items():
        if col not in seen:  # a column absent from every row is a wrong mapping, not sparse data
            raise _missing_column(spec.path, col, key, sorted(seen))
    return out


def _missing_column(where: str, column: str, key: str, columns: list[str]) -> DataError:
    config_key = key.split(" ")[0]
    fix = f"set `{config_key}` to one of them"
    if config_key in ("response_column", "system_column"):
        fix += ", or to null if the data has no such column"
    elif config_key == "meta_columns":
        fix = "remove it from `meta_columns` or rename the column in the data"
    close = difflib.get_close_matches(column, [str(c) for c in columns], n=1)
    guess = f" (did you mean {close[0]!r}?)" if close else ""
    return DataError(f"{where}: no column {column!r}{guess}; columns present: {list(columns)}; {fix}")


def _text(value: Any, column: str, key: str, where: str) -> str | None:
    """``value`` if it is text or missing (None); a DataError naming the type otherwise."""
    if value is None or isinstance(value, str):
        return value
    raise DataError(f"{where}: column {column!r} holds {_kind(value)} ({value!r:.40}), expected text; "
                    f"write it as a string (in quotes) or point `{key}` at a text column")


_KINDS = {bool: "a boolean", int: "a number (int)", float: "a number (float)", list: "a list", dict: "an object",
          str: "a string", type(None): "null"}


def _kind(value: Any) -> str:
    """How a JSON-ish value reads in an error message: "a list", "a number (int)"..."""
    return _KINDS.get(type(value), f"a {type(value).__name__}")
