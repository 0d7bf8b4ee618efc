import pytest

from tamperlab.data import DataFileError, read_rows_file


def test_jsonl_keeps_other_columns(tmp_path):
    p = tmp_path / "p.jsonl"
    p.write_text('{"prompt": "hi", "category": "x"}\n\n{"prompt": "yo", "id": 7}\n')
    rows = read_rows_file(p)
    assert rows[0]["category"] == "x" and rows[0]["id"] == "p-1"
    assert rows[1]["id"] == "7"


def test_csv_with_prompt_column(tmp_path):
    p = tmp_path / "p.csv"
    p.write_text('prompt,topic\n"hello, world",greet\n')
    assert read_rows_file(p) == [{"prompt": "hello, world", "topic": "greet", "id": "p-2"}]


@pytest.mark.parametrize("content,match", [
    ('{"prompt": "ok"}\n{"prompt": \n', r"p\.jsonl:2: not valid JSON"),
    ('{"prompt": "ok"}\n{"text": "no prompt"}\n', r"p\.jsonl:2: missing field 'prompt'"),
    ('{"prompt": "  "}\n', r"p\.jsonl:1: field 'prompt' must be a non-empty string"),
    ('{"prompt": 3}\n', r"p\.jsonl:1: field 'prompt' must be a non-empty string"),
    ('["prompt"]\n', r"p\.jsonl:1: each line must be a JSON object"),
    ('\n', r"p\.jsonl: no rows"),
])
def test_malformed_jsonl_names_file_line_field(tmp_path, content, match):
    p = tmp_path / "p.jsonl"
    p.write_text(content)
    with pytest.raises(DataFileError, match=match):
        read_rows_file(p)


def test_csv_errors(tmp_path):
    p = tmp_path / "p.csv"
    p.write_text("text\nhello\n")
    with pytest.raises(DataFileError, match=r"p\.csv:1: header has no 'prompt' column"):
        read_rows_file(p)
    p.write_text("prompt,completion\nhello,\n")
    with pytest.raises(DataFileError, match=r"p\.csv:2: field 'completion' must be a non-empty"):
        read_rows_file(p, required=("prompt", "completion"))


def test_missing_and_unsupported(tmp_path):
    with pytest.raises(DataFileError, match="file not found"):
        read_rows_file(tmp_path / "none.jsonl")
    (tmp_path / "a.txt").write_text("x")
    with pytest.raises(DataFileError, match="unsupported extension '.txt'"):
        read_rows_file(tmp_path / "a.txt")
