"""Guards: what the user's own words allow the planner to do."""

from recagent.agent.guards import allowed_filters, asked_for, is_negative, named_values, rejected_positions

FIELDS = {
    "genres": {"type": "list", "values": ["Comedy", "Horror", "Romance", "Sci-Fi"]},
    "year": {"type": "int"},
    "baseColour": {"type": "str", "values": ["Black", "Navy Blue", "Blue", "Red"]},
    "articleType": {"type": "str", "values": ["Tshirts", "Watches"]},
    "title": {"type": "str"},
}


def test_a_filter_counts_as_asked_for_by_its_value_a_synonym_or_a_time_word():
    assert asked_for("genre=Horror", "something scary tonight")
    assert asked_for("genre=Comedy", "a funny one")
    assert asked_for("genre=Sci-Fi", "robots in space")
    assert not asked_for("genre=Horror", "a heist film")
    assert asked_for("year<1990", "something older") and asked_for("year>=1990", "from the 1990s")
    assert not asked_for("year<1970", "a clever heist film")
    assert asked_for("genre!=Horror", "no horror please") and not asked_for("genre!=Horror", "horror please")
    assert not asked_for("not a filter", "anything") and not asked_for("title~Jaws", "jaws")


def test_values_named_outright_become_filters_on_photo_turns():
    assert named_values("like this but in navy blue", FIELDS, []) == ["baseColour=Navy Blue"]
    assert named_values("like this but in black", FIELDS, ["baseColour=Red"]) == []  # the planner's filter stands
    assert named_values("like this but in black", FIELDS, ["colour=Black"]) == []  # also under another name
    assert named_values("not black", FIELDS, []) == []  # a negation is the planner's to read
    assert named_values("a red watch", FIELDS, []) == ["baseColour=Red"]  # field values match whole words only


def test_rejections_need_a_negative_word_and_come_from_the_words_when_the_planner_forgets():
    assert is_negative("I've seen it") and not is_negative("more like this")
    assert rejected_positions("not the second one", [], 5) == [2]
    assert rejected_positions("I don't like the last one", [], 5) == [5]
    assert rejected_positions("something older", [1], 5) == []  # copied from the example: no negative word
    assert rejected_positions("no, not the third", [3, 9], 5) == [3]  # out of range dropped
    assert rejected_positions("not the first two", [], 5) == [1, 2]
    assert rejected_positions("I've seen the last three", [], 5) == [3, 4, 5]


def test_allowed_filters_keep_what_was_asked_for_or_already_stands():
    good, notes = allowed_filters(
        ["genre=Comedy", "genre!=Comedy", "year<1970", "size=3"], "a funny film", FIELDS, standing=[]
    )
    assert good == ["genre=Comedy"]
    assert [n.split(":")[0] for n in notes] == [
        "ignored filter 'genre!=Comedy'",
        "ignored filter 'year<1970'",
        "ignored filter 'size=3'",
    ]
    good, _ = allowed_filters(["year<1970"], "another one", FIELDS, standing=["year<1970"])
    assert good == ["year<1970"]  # a standing constraint holds without being said again
    good, _ = allowed_filters(["genre!=Horror"], "I've seen it", FIELDS, standing=["genres!=Horror"])
    assert good == ["genre!=Horror"]  # the planner's spelling of a standing constraint still stands
    good, _ = allowed_filters([], "like this but in black", FIELDS, standing=[], photo_turn=True)
    assert good == ["baseColour=Black"]
