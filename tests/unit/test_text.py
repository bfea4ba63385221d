"""Title normalisation and plain words: one implementation, used by grounding, title lookup and the ReDial matcher."""

from recagent.tools.text import GENRE_HINTS, GENRE_NAMES, plain_words, strip_year, title_key, title_year


def test_titles_compare_without_year_article_case_accents_and_punctuation():
    assert title_key("The Matrix (1999)") == "matrix" == title_key("matrix")
    assert title_key("The Lord of the Rings: The Two Towers") == "lord of the rings the two towers"
    assert title_key("Amélie (2001)") == title_key("Amelie")
    assert title_key("Fast & Furious") == "fast and furious"
    assert title_key("A Bug's Life") == "bug s life" and title_key("An American Tail") == "american tail"
    assert title_key("Theory of Everything") == "theory of everything"  # "the" only as a whole word


def test_year_and_plain_words():
    assert strip_year("Heat (1995)") == "Heat" and strip_year("1984") == "1984"
    assert title_year("Heat (1995)") == 1995 and title_year("Heat") is None
    assert plain_words("Don't STOP, now!") == "don t stop now"
    assert plain_words("Don't stop", drop="'") == "dont stop"
    assert plain_words("Außerirdische") == "ausserirdische"
    assert plain_words("T-Shirts", drop="-") == "tshirts"


def test_genre_hints_only_name_known_genres():
    assert set(GENRE_HINTS) <= set(GENRE_NAMES)


def test_marks_that_are_not_accents_separate_words():
    assert plain_words("red–tshirts") == "red tshirts" and plain_words("navy—blue") == "navy blue"
    assert plain_words("WALL·E") == "wall e" and plain_words("men’s") == plain_words("men's") == "men s"
