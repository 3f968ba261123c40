"""Readers: every happy path, every error message (file, line, fix), atomic JSONL writing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from unlearnlm.data import DatasetSpec, Dialogue, read_csv, read_dialogues, read_jsonl, write_jsonl
from unlearnlm.errors import DataError


def _jsonl(path: Path, *lines: str) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _raises(spec_or_call, *fragments: str) -> str:
    """Run a read and check the DataError message contains every fragment; returns the message."""
    with pytest.raises(DataError) as info:
        spec_or_call() if callable(spec_or_call) else read_dialogues(spec_or_call)
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    return message


# --------------------------------------------------------------------------------------------------
# happy paths


def test_jsonl_skips_blank_lines_and_sets_source_and_row(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "d.jsonl", '{"prompt": "p1", "response": "r1"}', "", "   ",
                  '{"prompt": "p2", "response": null}', '{"prompt": "p3"}')
    got = read_jsonl(path)
    assert [(d.prompt, d.response, d.system) for d in got] == [("p1", "r1", None), ("p2", "", None), ("p3", "", None)]
    assert [d.meta for d in got] == [{"source": str(path), "row": i} for i in range(3)]


def test_jsonl_column_mapping_system_and_meta_columns(tmp_path: Path) -> None:
    row = {"question": "Q?", "answer": "A.", "sys": "Be brief.", "id": 7, "tags": ["x"], "unused": 1}
    path = _jsonl(tmp_path / "m.jsonl", json.dumps(row))
    (d,) = read_jsonl(path, prompt_column="question", response_column="answer", system_column="sys",
                      meta_columns=["id", "tags"])
    assert d == Dialogue("Q?", "A.", "Be brief.", {"id": 7, "tags": ["x"], "source": str(path), "row": 0})


def test_prompt_only_data(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "p.jsonl", '{"text": "only a prompt"}')
    (d,) = read_jsonl(path, prompt_column="text", response_column=None)
    assert (d.prompt, d.response) == ("only a prompt", "")


def test_limit_stops_before_later_rows_are_parsed(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "l.jsonl", '{"prompt": "a"}', '{"prompt": "b"}', "not json at all")
    assert [d.prompt for d in read_jsonl(path, response_column=None, limit=2)] == ["a", "b"]
    assert len(read_jsonl(path, response_column=None, limit=1)) == 1
    _raises(lambda: read_jsonl(path, response_column=None), "l.jsonl:3", "invalid JSON")


def test_json_array_file(tmp_path: Path) -> None:
    path = tmp_path / "a.json"
    path.write_text(json.dumps([{"prompt": "a", "response": "b"}, {"prompt": "c"}], indent=2), encoding="utf-8")
    got = read_dialogues(DatasetSpec(str(path)))
    assert [(d.prompt, d.response) for d in got] == [("a", "b"), ("c", "")]


def test_csv_with_bom_crlf_quoted_commas_and_multiline_fields(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    text = 'prompt,response,cat\r\n"line one\r\nline two","a, b",x\r\nplain,"say ""hi""",y\r\n'
    path.write_bytes("\ufeff".encode() + text.encode("utf-8"))
    got = read_csv(path, meta_columns=["cat"])
    assert [(d.prompt, d.response) for d in got] == [("line one\r\nline two", "a, b"), ("plain", 'say "hi"')]
    assert [d.meta["cat"] for d in got] == ["x", "y"]


def test_csv_error_line_numbers_count_multiline_fields(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    path.write_text('prompt,response\n"two\nlines",ok\n"   ",empty\n', encoding="utf-8")
    _raises(lambda: read_csv(path), "m.csv:4", "empty prompt", "fill it in or delete the row")


def test_save_to_disk_folder_auto_detected(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    folder = tmp_path / "saved"
    datasets.Dataset.from_dict(
        {"q": ["a", "b", "c"], "r": ["x", "y", "z"], "s": ["S", None, "S"], "id": [1, 2, 3]}
    ).save_to_disk(str(folder))
    got = read_dialogues(DatasetSpec(str(folder), prompt_column="q", response_column="r", system_column="s",
                                     meta_columns=["id"], limit=2))
    assert got == [Dialogue("a", "x", "S", {"id": 1, "source": str(folder), "row": 0}),
                   Dialogue("b", "y", None, {"id": 2, "source": str(folder), "row": 1})]


def test_saved_dataset_dict_picks_split(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    folder = tmp_path / "dd"
    datasets.DatasetDict({"train": datasets.Dataset.from_dict({"prompt": ["t"]}),
                          "test": datasets.Dataset.from_dict({"prompt": ["e"]})}).save_to_disk(str(folder))
    spec = DatasetSpec(str(folder), response_column=None, split="test")
    assert [d.prompt for d in read_dialogues(spec)] == ["e"]
    _raises(DatasetSpec(str(folder), split="validation"), "dd", "no split 'validation'", "set `split`", "train")


def test_hf_wrong_type_names_row(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    folder = tmp_path / "nums"
    datasets.Dataset.from_dict({"prompt": ["ok", "fine"], "response": [1, 2]}).save_to_disk(str(folder))
    _raises(DatasetSpec(str(folder)), "nums row 0", "a number (int)", "expected text", "response_column")


def test_hub_id_goes_to_load_dataset(monkeypatch: pytest.MonkeyPatch) -> None:
    datasets = pytest.importorskip("datasets")
    calls = []

    def fake_load_dataset(path, name=None, split=None):
        calls.append((path, name, split))
        return datasets.Dataset.from_dict({"prompt": ["hub prompt"], "response": ["hub answer"]})

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    (d,) = read_dialogues(DatasetSpec("org/some-set", name="cfg", split="test"))
    assert calls == [("org/some-set", "cfg", "test")]
    assert (d.prompt, d.meta["source"]) == ("hub prompt", "org/some-set")


def test_load_dataset_failure_is_wrapped_with_offline_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    datasets = pytest.importorskip("datasets")

    def offline(*args, **kwargs):
        raise ConnectionError("could not reach the hub")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    _raises(DatasetSpec("org/some-set"), "org/some-set", "ConnectionError", "offline", "local path")


def test_meta_object_is_merged_and_write_read_round_trip(tmp_path: Path) -> None:
    original = [Dialogue("p1", "r1", "sys", {"id": "a", "score": 0.5, "nested": {"k": [1, 2]}}),
                Dialogue("p2 \u2028 with separator", "r2 ünïcode")]
    path = write_jsonl(tmp_path / "sub" / "out.jsonl", original)
    back = read_jsonl(path, system_column="system")  # system is opt-in, as for any file
    strip = [(d.prompt, d.response, d.system, {k: v for k, v in d.meta.items() if k not in ("source", "row")})
             for d in back]
    assert strip == [(d.prompt, d.response, d.system, d.meta) for d in original]
    assert back[1].meta == {"source": str(path), "row": 1}


def test_write_jsonl_is_atomic(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "out.jsonl", [Dialogue("old", "kept")])
    before = path.read_bytes()
    bad = [Dialogue("new", "x"), Dialogue("new", "y", meta={"ids": {1, 2}})]  # a set is not JSON
    _raises(lambda: write_jsonl(path, bad), "out.jsonl", "dialogue 1", "convert sets to lists")
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.jsonl"]  # no temp file left behind
    write_jsonl(path, [Dialogue("new", "z")])
    assert [d.prompt for d in read_jsonl(path)] == ["new"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.jsonl"]


# --------------------------------------------------------------------------------------------------
# error paths: each message names the file, the line and the fix


def test_missing_file(tmp_path: Path) -> None:
    _raises(DatasetSpec(str(tmp_path / "nope.jsonl")), "nope.jsonl", "file not found", "check the path")
    _raises(lambda: read_csv(tmp_path / "nope"), "nope", "file not found")


def test_directory_where_file_expected(tmp_path: Path) -> None:
    (tmp_path / "data.jsonl").mkdir()
    _raises(DatasetSpec(str(tmp_path / "data.jsonl")), "data.jsonl", "is a directory", "point `path` at the jsonl file")
    _raises(lambda: read_csv(tmp_path), str(tmp_path), "is a directory", "csv file inside it")


def test_unknown_suffix_and_format(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hello", encoding="utf-8")
    _raises(DatasetSpec(str(tmp_path / "notes.txt")), "notes.txt", "unknown suffix '.txt'", "set `format`")
    _raises(lambda: DatasetSpec("x.jsonl", format="parquet"), "x.jsonl", "unknown format 'parquet'", "'jsonl'")


def test_invalid_json_shows_line_and_excerpt(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "bad.jsonl", '{"prompt": "a"}', "", '{"prompt": "b", oops}')
    _raises(DatasetSpec(str(path)), "bad.jsonl:3", "invalid JSON", 'oops}', "one complete JSON object")


def test_pretty_printed_json_in_jsonl_file_gets_hint(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "arr.jsonl", "[", '  {"prompt": "a"}', "]")
    _raises(DatasetSpec(str(path)), "arr.jsonl:1", "invalid JSON", ".json suffix")


@pytest.mark.parametrize(("line", "kind"), [('["a", "b"]', "a list"), ('"just text"', "a string"), ("3", "a number")])
def test_jsonl_line_not_an_object(tmp_path: Path, line: str, kind: str) -> None:
    path = _jsonl(tmp_path / "x.jsonl", '{"prompt": "a"}', line)
    _raises(DatasetSpec(str(path)), "x.jsonl:2", kind, "expected a JSON object")


def test_missing_prompt_column_lists_columns_and_key(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "c.jsonl", '{"prompt": "a"}', '{"question": "b", "answer": "c"}')
    _raises(DatasetSpec(str(path)), "c.jsonl:2", "no column 'prompt'", "'question'", "'answer'", "`prompt_column`")


def test_missing_optional_columns_everywhere(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "c.jsonl", '{"prompt": "a", "answer": "x"}', '{"prompt": "b", "answer": "y"}')
    _raises(DatasetSpec(str(path)), "c.jsonl", "no column 'response'", "'answer'", "`response_column`", "null")
    _raises(DatasetSpec(str(path), response_column="answer", system_column="system"),
            "no column 'system'", "`system_column`")
    _raises(DatasetSpec(str(path), response_column="answer", meta_columns=["id"]),
            "no column 'id'", "`meta_columns`")


def test_csv_missing_column_reported_at_header(tmp_path: Path) -> None:
    path = tmp_path / "h.csv"
    path.write_text("Prompt,response\nhi,there\n", encoding="utf-8")
    _raises(lambda: read_csv(path), "h.csv:1", "no column 'prompt'", "did you mean 'Prompt'", "`prompt_column`")


@pytest.mark.parametrize("prompt", ['""', '"   \\n\\t"', "null"])
def test_empty_prompt(tmp_path: Path, prompt: str) -> None:
    path = _jsonl(tmp_path / "e.jsonl", '{"prompt": "ok"}', "", f'{{"prompt": {prompt}}}')
    _raises(DatasetSpec(str(path)), "e.jsonl:3", "empty prompt", "'prompt'", "fill it in or delete the row")


@pytest.mark.parametrize(("value", "kind", "column"),
                         [("42", "a number (int)", "prompt"), ('["a"]', "a list", "response"),
                          ('{"x": 1}', "an object", "system"), ("true", "a boolean", "response")])
def test_wrong_type(tmp_path: Path, value: str, kind: str, column: str) -> None:
    row = {"prompt": "p", "response": "r", "system": "s"}
    line = json.dumps(row).replace(f'"{column}": "{row[column]}"', f'"{column}": {value}')
    path = _jsonl(tmp_path / "t.jsonl", json.dumps(row), line)
    _raises(DatasetSpec(str(path), system_column="system"), "t.jsonl:2", kind, "expected text", f"`{column}_column`")


def test_require_response(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "r.jsonl", '{"prompt": "a", "response": "b"}', '{"prompt": "c", "response": " "}')
    _raises(DatasetSpec(str(path), require_response=True), "r.jsonl:2", "empty or missing response",
            "require_response: false")
    _raises(lambda: DatasetSpec("x.csv", response_column=None, require_response=True), "response_column")


@pytest.mark.parametrize(("name", "content"), [("e.jsonl", ""), ("b.jsonl", "\n \n\n"), ("h.csv", "prompt,response\n")])
def test_empty_set(tmp_path: Path, name: str, content: str) -> None:
    (tmp_path / name).write_text(content, encoding="utf-8")
    _raises(DatasetSpec(str(tmp_path / name)), name, "no rows", "add at least one row")


def test_empty_csv_file(tmp_path: Path) -> None:
    (tmp_path / "z.csv").write_bytes(b"")
    _raises(lambda: read_csv(tmp_path / "z.csv"), "z.csv", "empty", "add a header row")


def test_non_utf8_names_offset_and_line(tmp_path: Path) -> None:
    path = tmp_path / "latin.csv"
    path.write_bytes("prompt,response\ncaf".encode() + b"\xe9,ok\n")
    _raises(lambda: read_csv(path), "latin.csv:2", "byte 0xe9 at offset 19", "re-encode it as UTF-8")


def test_csv_field_count_mismatch(tmp_path: Path) -> None:
    path = tmp_path / "f.csv"
    path.write_text("prompt,response\na,b\nx,y,z\n", encoding="utf-8")
    _raises(lambda: read_csv(path), "f.csv:3", "3 fields but the header has 2", "quote fields")


@pytest.mark.parametrize("limit", [0, -3, True, "10"])
def test_invalid_limit(limit: object) -> None:
    _raises(lambda: DatasetSpec("d.jsonl", limit=limit), "d.jsonl", "`limit` must be a positive integer")


def test_from_dict() -> None:
    spec = DatasetSpec.from_dict({"path": "q.csv", "prompt_column": "q", "meta_columns": ("id",), "limit": 5})
    assert (spec.prompt_column, spec.meta_columns, spec.limit) == ("q", ["id"], 5)
    _raises(lambda: DatasetSpec.from_dict({"path": "q.csv", "promt_column": "q"}),
            "unknown key(s) ['promt_column']", "valid keys are", "'prompt_column'", "did you mean 'prompt_column'")
    _raises(lambda: DatasetSpec.from_dict({"prompt_column": "q"}), "no `path`")
    _raises(lambda: DatasetSpec.from_dict(["q.csv"]), "must be a mapping")
    _raises(lambda: DatasetSpec.from_dict({"path": "q.csv", "meta_columns": "id"}), "`meta_columns` must be a list")
    _raises(lambda: DatasetSpec.from_dict({"path": "q.csv", "meta_columns": ["source"]}), "may not contain")
    _raises(lambda: read_jsonl("q.jsonl", format="csv"), "fixes format='jsonl'")
