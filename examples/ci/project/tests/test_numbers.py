import pytest

from tally import mean, numbers


def test_numbers_in_text() -> None:
    assert numbers("3 cats, -2 dogs and 1.5 birds") == [3.0, -2.0, 1.5]


def test_no_numbers() -> None:
    assert numbers("none here") == []


def test_mean() -> None:
    assert mean([1.0, 2.0, 6.0]) == 3.0


def test_mean_of_nothing() -> None:
    with pytest.raises(ValueError, match="no values"):
        mean([])
