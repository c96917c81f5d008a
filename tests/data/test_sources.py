"""chimed_trl.data.sources.parse_sources: the one reader of a recipe's source lists (datasets, eval_datasets,
the evaluation's *_datasets)."""

import pytest

from chimed_trl.errors import UserError

ENTRIES = [
    {"formatter": "text", "path": "a.jsonl"},
    [{"formatter": "text", "path": "b.jsonl"}, {"formatter": "text", "pth": "c.jsonl"}],  # one CLI JSON list
]


def _readers():
    from chimed_trl.configs import parse_sources as recipe_datasets
    from chimed_trl.data.heldout import parse_eval_sources
    from chimed_trl.evaluation.config import EvalArguments

    return [
        (recipe_datasets, "datasets"),
        (parse_eval_sources, "eval_datasets"),
        (lambda entries: EvalArguments(output_dir="o", choice_datasets=entries), "choice_datasets"),
    ]


@pytest.mark.parametrize("reader, key", _readers(), ids=["datasets", "eval_datasets", "choice_datasets"])
def test_every_source_list_flattens_cli_lists_and_names_the_place(reader, key):
    """catches: copies of the parser drifting apart: a JSON list from the command line not flattened (the third
    source would be named ``[1]``, or refused as a list), or a mistake named under another key."""
    with pytest.raises(UserError, match=rf"^{key}\[2\]: unknown keys \['pth'\]"):
        reader(ENTRIES)
    parsed = reader(ENTRIES[:1] + [ENTRIES[1][:1]])
    paths = [s.path for s in (parsed.choice_datasets if hasattr(parsed, "choice_datasets") else parsed)]
    assert [p.rsplit("/", 1)[-1] for p in paths] == ["a.jsonl", "b.jsonl"]
