"""The catalog vocabulary that Whisper is told first (tools/speech.py, `vocabulary_prompt`): which words, in what
order, within what length."""

from recagent.tools.speech import VOCABULARY_CHARS, VOCABULARY_VALUES, vocabulary_prompt


def shop_items() -> list[tuple[str, dict]]:
    items = []
    for i in range(30):
        meta = {
            "articleType": "Sports Shoes" if i % 3 else "Kurtas",
            "baseColour": ["Black", "Black", "Navy Blue", "NA"][i % 4],
            "sku": f"SKU-{i:04d}",  # one value per item: ids, not words
            "brand": "Acme",  # one value for every item: says nothing
            "year": 2010 + i % 5,  # numbers are not words
            "tags": ["summer", "sale"] if i % 2 else ["summer"],
        }
        items.append((f"Acme Men Black Shoe {i}", meta))
    return items


def test_a_shop_is_told_its_categorical_words_most_frequent_first_in_lower_case_ties_alphabetical():
    prompt = vocabulary_prompt(shop_items())
    assert prompt == "We sell summer, sports shoes, black, sale, kurtas, navy blue."


def test_fields_with_too_many_values_and_missing_values_are_left_out():
    items = [(f"t{i}", {"note": f"free text number {i}", "kind": "a" if i % 2 else "b"}) for i in range(200)]
    assert VOCABULARY_VALUES < 200
    assert vocabulary_prompt(items) == "We sell a, b."
    assert "na" not in vocabulary_prompt(shop_items()).split(", ")
    assert vocabulary_prompt([]) == ""
    assert vocabulary_prompt([("Only a title", {})]) == ""


def test_popular_titles_follow_the_words_as_they_are_said():
    items = [
        ("The Matrix (1999)", {"title": "Matrix, The", "genres": ["Sci-Fi", "Action"], "ratings": 278}),
        ("Seven (a.k.a. Se7en) (1995)", {"title": "Seven (a.k.a. Se7en)", "genres": ["Thriller"], "ratings": 203}),
        ("Star Wars: Episode IV - A New Hope (1977)", {"genres": ["Sci-Fi"], "ratings": 251}),
        ("Obscure (2001)", {"genres": ["Drama"], "ratings": 0}),  # never rated: not popular
    ]
    prompt = vocabulary_prompt(items, popularity="ratings", noun="movie", shop=False)
    assert prompt == (
        "We talk about sci-fi, action, drama, thriller movies. Have you seen The Matrix, Star Wars, Seven?"
    )
    assert "Have you seen" not in vocabulary_prompt(items)  # no popularity field named: no titles


def test_the_prompt_stays_within_its_length_and_keeps_room_for_titles():
    items = [
        (f"Movie number {i}", {"genres": [f"genre{i % 90}"], "ratings": 1000 - i, "title": f"Movie number {i}"})
        for i in range(1000)
    ]
    prompt = vocabulary_prompt(items, popularity="ratings", noun="movie", shop=False)
    framing = len("We talk about  movies. Have you seen ?")
    assert len(prompt) <= VOCABULARY_CHARS + framing
    words, titles = prompt.split(" movies. Have you seen ")
    assert len(words) > 100 and len(titles) > VOCABULARY_CHARS // 3
    assert titles.startswith("Movie number 0, Movie number 1, ")  # most popular first
    short = vocabulary_prompt(items, popularity="ratings", noun="movie", shop=False, max_chars=60)
    assert len(short) <= 60 + framing
