"""Up-front checks of every numeric and enum setting: one ConfigError line naming the key, before any load."""

import pytest

from chimed_trl.errors import ConfigError

from ..test_rejection_sampling import config


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"learning_rate": -1.0}, "learning_rate must be > 0, got -1.0"),
        ({"learning_rate": 0.0}, "learning_rate must be > 0"),
        ({"per_device_train_batch_size": 0}, "per_device_train_batch_size=0 must be an integer >= 1"),
        ({"gradient_accumulation_steps": 0}, "gradient_accumulation_steps=0 must be an integer >= 1"),
        ({"generation_batch_size": 0}, "generation_batch_size=0 must be an integer >= 1"),
        ({"generation_max_concurrency": 0}, "generation_max_concurrency=0 must be an integer >= 1"),
        ({"reward_batch_size": -2}, "reward_batch_size=-2 must be an integer >= 1"),
        ({"max_new_tokens": 0}, "max_new_tokens=0 must be an integer >= 1"),
        ({"num_rounds": 0}, "num_rounds=0 must be an integer >= 1"),
        ({"num_samples": 0}, "num_samples=0 must be an integer >= 1"),
        ({"top_k": 5}, "top_k=5 is larger than num_samples=4"),
        ({"temperature": 0.0}, "temperature must be > 0 for sampling"),
        ({"top_p": 1.5}, r"top_p=1.5 must be in \(0, 1\]"),
        ({"sampling_top_k": -1}, "sampling_top_k=-1 must be >= 0"),
        ({"max_length": 8, "max_new_tokens": 8}, "max_length=8 leaves no room for a prompt with max_new_tokens=8"),
        ({"num_train_epochs": 0}, "num_train_epochs must be > 0"),
        ({"prompt_overflow": "cut"}, r"prompt_overflow must be one of \('drop', 'truncate_left', 'error'\)"),
        ({"generation_backend": "vllm"}, "generation_backend must be one of"),
        ({"generation_sampling_via": "x"}, "generation_sampling_via must be one of"),
        ({"generation_backend": "server"}, "generation_backend: server needs generation_base_url"),
    ],
)
def test_bad_settings_are_one_line_naming_the_key(overrides, message, tmp_path):
    # bugs caught: a negative learning rate reaching torch (a traceback after a whole generation round), a zero
    # batch size as a ZeroDivisionError, a typo'd enum silently taken as the default
    with pytest.raises(ConfigError, match=message) as err:
        config(tmp_path / "run", **overrides)
    assert "\n" not in str(err.value)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "value, expected",
    [
        ("http://a:1/v1", ["http://a:1/v1"]),
        ("http://a:1/v1/, http://b:2/v1", ["http://a:1/v1", "http://b:2/v1"]),
        ('["http://a:1/v1", "http://b:2/v1"]', ["http://a:1/v1", "http://b:2/v1"]),
        (["http://a:1/v1", "http://b:2/v1"], ["http://a:1/v1", "http://b:2/v1"]),
    ],
)
def test_base_url_takes_one_server_or_a_list_of_replicas(value, expected, tmp_path):
    # bug caught: a YAML list or a comma/JSON list on the command line taken as one URL
    args = config(tmp_path / "run", generation_backend="server", generation_base_url=value)
    assert args.base_urls == expected


def test_a_replica_listed_twice_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="generation_base_url lists a replica twice"):
        config(tmp_path / "run", generation_backend="server", generation_base_url=["http://a/v1", "http://a/v1/"])
