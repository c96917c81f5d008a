import pytest

from chimed_trl.data.records import DataError, is_empty, validate


def test_valid_records_pass():
    validate({"text": "x"}, "text", "f:1")
    validate(
        {
            "messages": [
                {"role": "system", "content": "s"},
                {"role": "user", "content": "u"},
                {"role": "assistant", "content": "a"},
            ]
        },
        "conversation",
        "f:1",
    )
    ranked = {"prompt": [{"role": "user", "content": "q"}], "responses": ["a", "b", "c"], "ranks": [0, 0, 1]}
    validate(ranked, "ranked", "f:1")  # ties are allowed as long as something is ordered
    validate(
        {"id": "1", "subject": "s", "question": "q", "options": {"A": "x", "B": "y"}, "answer": "B"}, "choice", "f:1"
    )
    validate({"id": "1", "text": "头痛", "entities": [{"start": 0, "end": 2, "type": "症状"}]}, "ner", "f:1")
    validate({"scale": "MICA", "item": 3, "text": "t"}, "scale_item", "f:1")


@pytest.mark.parametrize(
    "record, fmt, field, message",
    [
        ({"txt": "x"}, "text", "text", "missing"),
        ({"text": 3}, "text", "text", "expected str"),
        ({"messages": [{"role": "user", "content": "u"}]}, "conversation", "messages", "no assistant turn"),
        ({"messages": [{"role": "doctor", "content": "u"}]}, "conversation", "messages[0].role", "unknown role"),
        (
            {"messages": [{"role": "user"}, {"role": "assistant", "content": "a"}]},
            "conversation",
            "messages[0].content",
            "missing",
        ),
        ({"prompt": [{"role": "user", "content": "q"}], "responses": ["a"]}, "ranked", "responses", "at least 2"),
        ({"prompt": [{"role": "user", "content": "q"}], "responses": ["a", "a"]}, "ranked", "responses", "duplicate"),
        (
            {"prompt": [{"role": "user", "content": "q"}], "responses": ["a", "b"], "ranks": [0]},
            "ranked",
            "ranks",
            "1 entries for 2",
        ),
        (
            {"prompt": [{"role": "user", "content": "q"}], "responses": ["a", "b"], "ranks": [1, 0]},
            "ranked",
            "ranks",
            "best first",
        ),
        (
            {"prompt": [{"role": "user", "content": "q"}], "responses": ["a", "b"], "ranks": [-1, 0]},
            "ranked",
            "ranks",
            ">= 0",
        ),
        (
            {"prompt": [{"role": "user", "content": "q"}], "responses": ["a", "b"], "ranks": [2, 2]},
            "ranked",
            "ranks",
            "all responses are tied",
        ),
        (
            {"id": "1", "subject": "s", "question": "q", "options": {"A": "x"}, "answer": "A"},
            "choice",
            "options",
            "at least 2",
        ),
        (
            {"id": "1", "subject": "s", "question": "q", "options": {"A": "x", "B": "y"}, "answer": "E"},
            "choice",
            "answer",
            "not among",
        ),
        (
            {"id": "1", "text": "头痛", "entities": [{"start": 1, "end": 5, "type": "症状"}]},
            "ner",
            "entities[0]",
            "outside the text",
        ),
        ({"scale": "XYZ", "item": 1, "text": "t"}, "scale_item", "scale", "unknown scale"),
    ],
)
def test_bad_records_name_place_and_field(record, fmt, field, message):
    with pytest.raises(DataError, match=message) as info:
        validate(record, fmt, "data.jsonl:7")
    assert info.value.where == "data.jsonl:7" and info.value.field == field
    assert str(info.value).startswith("data.jsonl:7: ")


def test_empty_reasons():
    assert is_empty({"text": "  "}, "text") == "empty text"
    assert is_empty({"messages": [{"role": "user", "content": ""}]}, "conversation") == "empty message"
    assert is_empty({"text": "x"}, "text") is None
