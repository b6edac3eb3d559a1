from tally import top_words, words


def test_words_are_lower_cased() -> None:
    assert words("The cat SAT") == ["the", "cat", "sat"]


def test_punctuation_is_not_a_word() -> None:
    assert words("a, b; c.") == ["a", "b", "c"]


def test_apostrophes_stay_in_words() -> None:
    assert words("it's") == ["it's"]


def test_top_words_counts() -> None:
    assert top_words("b a b c b a", 2) == [("b", 3), ("a", 2)]
