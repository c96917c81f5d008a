"""Sampling parameters: out-of-range values are one clear error naming the field."""

import pytest

from chimed_trl.errors import UserError
from chimed_trl.generation import SamplingParams


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"n": 0}, "n=0"),
        ({"temperature": -1.0}, "temperature=-1.0"),
        ({"top_p": 0.0}, "top_p=0.0"),
        ({"max_new_tokens": 0}, "max_new_tokens=0"),
    ],
)
def test_out_of_range_sampling_is_a_user_error(kwargs, field):
    # bug caught: n=0 silently returning empty lists, a negative temperature reaching the model as a crash
    with pytest.raises(UserError, match=field):
        SamplingParams(**kwargs)


def test_greedy_is_the_default():
    # bug caught: a sampling default that would move evaluation numbers between runs
    assert SamplingParams().greedy and SamplingParams().n == 1
