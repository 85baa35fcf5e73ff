"""The integer and choice checks every config dataclass uses: what they accept and say."""

import numpy as np
import pytest

from fields.choices import require_choice
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


def test_choices_pass_and_keep_in_semantics():
    require_choice("Cfg", "kind", "rsqrt", ("rsqrt", "cosine"))
    require_choice("Cfg", "flag", None, (None, True, False))
    require_choice("Cfg", "dtype", "bfloat16", {"float32": 1, "bfloat16": 2})


@pytest.mark.parametrize("value,valid,match", [
    ("cosin", ("rsqrt", "cosine"),
     r"^Cfg\.kind='cosin' is invalid: expected one of \('rsqrt', 'cosine'\); "
     r"did you mean 'cosine'\?$"),
    ("zzz", ("rsqrt", "cosine"), r"^Cfg\.kind='zzz' is invalid: expected one of "
     r"\('rsqrt', 'cosine'\)$"),
    ("c", {"b": 1, "a": 2}, r"expected one of \('a', 'b'\)$"),   # a set or dict: sorted
    (["rsqrt"], ("rsqrt",), r"kind=\['rsqrt'\] is invalid"),   # unhashable: in no set
])
def test_a_bad_choice_names_field_value_choices_and_the_closest(value, valid, match):
    with pytest.raises(ValueError, match=match):
        require_choice("Cfg", "kind", value, valid)


def test_choice_meaning_and_a_bare_flag_name():
    with pytest.raises(ValueError, match=r"^--to='hf2' is invalid: expected one of \('hf', "
                                         r"'t5x'\) \(a weights format\); did you mean 'hf'\?$"):
        require_choice("", "--to", "hf2", ("hf", "t5x"), meaning="a weights format")
