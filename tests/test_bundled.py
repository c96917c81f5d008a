"""Shipped files resolve from any working directory, and a user's own file of the same name always wins."""

import json
import os
from pathlib import Path

import pytest

from chimed_trl.bundled import bundled_path
from chimed_trl.data.sources import SourceConfig, load_records

from .conftest import REPO


@pytest.fixture
def elsewhere(tmp_path):
    old = Path.cwd()
    os.chdir(tmp_path)
    yield tmp_path
    os.chdir(old)


def test_shipped_config_and_sample_resolve_outside_the_checkout(elsewhere):
    """catches: configs naming recipes/tiny/... or chimed_trl/data/samples/... only working from the repo root."""
    config = bundled_path("recipes/tiny/sft.yaml")
    assert config.is_absolute() and config.read_bytes() == (REPO / "recipes/tiny/sft.yaml").read_bytes()
    sample = bundled_path("chimed_trl/data/samples/sft.jsonl")
    assert sample.read_bytes() == (REPO / "chimed_trl/data/samples/sft.jsonl").read_bytes()
    assert bundled_path("accelerate_configs/cpu_2proc.yaml").exists()


def test_a_users_own_file_wins_and_other_paths_are_left_alone(elsewhere):
    """catches: the fallback shadowing a user's file that has a shipped name, or rewriting unrelated paths."""
    mine = elsewhere / "recipes" / "tiny" / "sft.yaml"
    mine.parent.mkdir(parents=True)
    mine.write_text("stage: sft\n", encoding="utf-8")
    assert bundled_path("recipes/tiny/sft.yaml") == Path("recipes/tiny/sft.yaml")
    assert bundled_path("data/mine.jsonl") == Path("data/mine.jsonl")  # not a shipped tree: unchanged
    assert bundled_path("recipes/tiny/no_such.yaml") == Path("recipes/tiny/no_such.yaml")  # the error names it


def test_a_card_for_a_bundled_sample_needs_no_path(elsewhere):
    """catches: a card-only source being fetched from the hub under its file name (the card's `source`)."""
    lines = (REPO / "chimed_trl/data/samples/sft.jsonl").read_text(encoding="utf-8").splitlines()
    expected = [json.loads(line)["messages"] for line in lines if line.strip()]
    records, stats = load_records(SourceConfig(card="tiny_sft"))
    assert [r["messages"] for r in records] == expected and stats.kept == len(expected) == 40


def test_a_path_stepping_out_of_a_shipped_tree_is_left_as_given(elsewhere):
    """catches: ``chimed_trl/../setup.py`` or ``recipes/tiny/../../README.md`` (missing where the user runs) resolving
    to a file beside the installed package (the checkout's own README, or whatever sits in site-packages)."""
    for path in ("chimed_trl/../README.md", "recipes/tiny/../../README.md"):
        assert (REPO / path).exists()  # what the resolution would have reached
        assert bundled_path(path) == Path(path)
