"""One integer check for every config dataclass: what it accepts and what it says."""

import numpy as np
import pytest

from fields.integers import require_int


@pytest.mark.parametrize("value", [0, 7, np.int32(3), np.int64(9)])
def test_integers_in_range_pass(value):
    require_int("Cfg", "n", value, 0, 9)


@pytest.mark.parametrize("value,match", [
    (True, r"Cfg\.n=True is invalid: expected an integer >= 1, got bool"),
    (2.0, r"Cfg\.n=2\.0 is invalid: expected an integer >= 1, got float"),
    ("8", r"Cfg\.n='8' is invalid: expected an integer >= 1, got str"),
    (0, r"Cfg\.n=0 is invalid: expected an integer >= 1$"),
])
def test_non_integers_and_out_of_range_are_named(value, match):
    with pytest.raises(ValueError, match=match):
        require_int("Cfg", "n", value, 1)


def test_bounds_and_meaning_appear_in_the_message():
    with pytest.raises(ValueError, match=r"k=5 is invalid: expected an integer in \[1, 4\] "
                                         r"\(at most num_experts\)"):
        require_int("MoEConfig", "k", 5, 1, 4, meaning="at most num_experts")
    with pytest.raises(ValueError, match=r"expected an integer <= 3"):
        require_int("Cfg", "n", 4, maximum=3)
