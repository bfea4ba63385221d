"""Words, in one place: how titles are compared, how text is reduced to plain words, and the genre vocabulary."""

from __future__ import annotations

import re
import unicodedata

_YEAR_SUFFIX = re.compile(r"\s*\((\d{4})\)\s*$")
_ARTICLES = ("the ", "a ", "an ")


def strip_year(title: str) -> str:
    """'The Matrix (1999)' -> 'The Matrix': a title without its trailing "(Year)"."""
    return _YEAR_SUFFIX.sub("", title).strip()


def title_year(title: str) -> int | None:
    """'The Matrix (1999)' -> 1999; None when the title does not end in a year."""
    match = _YEAR_SUFFIX.search(title)
    return int(match.group(1)) if match else None


def plain_words(text: str, drop: str = "") -> str:
    """Lower case, accents dropped, the characters in `drop` removed, every other mark a space, single spaces:
    plain_words("Don't stop!") -> "don t stop"; plain_words("T-Shirts", drop="-") -> "tshirts"; "Amélie" -> "amelie"."""
    text = text.replace("ß", "ss")  # German: "außerirdische" -> "ausserirdische", not "au erirdische"
    text = "".join(ch for ch in unicodedata.normalize("NFKD", text) if not unicodedata.combining(ch)).lower()
    for ch in drop:
        text = text.replace(ch, "")
    return " ".join(re.sub(r"[^a-z0-9]+", " ", text).split())


def title_key(title: str) -> str:
    """How titles are compared: 'The Lord of the Rings: The Two Towers (2002)' -> 'lord of the rings the two
    towers' (year, accents, case, punctuation and a leading article dropped; '&' read as 'and')."""
    key = plain_words(strip_year(title).replace("&", " and "))
    for article in _ARTICLES:
        if key.startswith(article):
            return key[len(article) :]
    return key


# The genre vocabulary: for each MovieLens genre, the words (or word beginnings) by which people name it.
# NAMES are precise: the ranking head's genre feature reads a request with them (its weights were learned on
# them). HINTS are looser words that only the planner guard accepts as asking for the genre.
GENRE_NAMES: dict[str, str] = {
    "Comedy": "comed funny laugh hilarious humor humour",
    "Horror": "horror scary spooky frighten creepy slasher",
    "Animation": "animat cartoon pixar disney anime",
    "Romance": "romanc romantic rom-com romcom chick flick",
    "Drama": "drama",
    "Sci-Fi": "sci-fi science fiction scifi space alien",
    "Thriller": "thriller suspense",
    "Action": "action",
    "Crime": "crime heist gangster mob mafia",
    "Documentary": "documentar",
    "Children": "kid kids family children",
    "Fantasy": "fantasy magic wizard",
    "War": "war soldier",
    "Western": "western cowboy",
    "Musical": "musical",
    "Mystery": "mystery detective whodunit",
    "Adventure": "adventure",
    "Film-Noir": "noir",
}
GENRE_HINTS: dict[str, str] = {
    "Horror": "frightening terrifying",
    "Comedy": "comedic",
    "Children": "child children's",
    "Romance": "love",
    "Sci-Fi": "future robot",
    "Thriller": "thrilling tense",
    "Crime": "police detective",
    "Documentary": "documentaries real story",
    "Musical": "music musicals singing",
    "War": "battle military",
    "Fantasy": "dragon",
    "Action": "explosions fight",
    "Drama": "dramatic emotional",
    "Adventure": "quest journey",
}
