"""The one append-only JSONL store (chimed_trl.jsonl_store) that augmentation and rejection sampling write through."""

import pytest

from chimed_trl.errors import UserError
from chimed_trl.jsonl_store import JsonlStore


def test_repair_cuts_only_a_torn_last_line_and_keeps_line_separators_inside_text(tmp_path):
    # Bugs caught: a torn last line (a kill inside write) kept, so the rerun's first append glues onto it; a whole
    # line dropped with it; text holding U+2028 (which json.dumps(ensure_ascii=False) leaves raw) split in two.
    path = tmp_path / "s.jsonl"
    path.write_text('{"id": 1, "t": "a\u2028b"}\n{"id": 2}\n{"id": 3, "t": "tor', encoding="utf-8")
    store = JsonlStore(path)
    assert store.repair() == [{"id": 1, "t": "a\u2028b"}, {"id": 2}]
    assert path.read_text(encoding="utf-8") == '{"id": 1, "t": "a\u2028b"}\n{"id": 2}\n'  # written by hand
    store.append([{"id": 3}])
    assert [row["id"] for row in store.read()] == [1, 2, 3]


def test_an_edited_line_is_one_error_naming_file_and_line(tmp_path):
    # Bug caught: a hand-edited store failing with a JSONDecodeError traceback that names neither file nor line.
    path = tmp_path / "ranked.jsonl"
    path.write_text('{"id": 1}\n{"id": 2,,}\n{"id": 3}\n', encoding="utf-8")
    with pytest.raises(UserError, match=rf"^{path}:2: malformed JSON .*was the file edited\?$"):
        JsonlStore(path).read()
