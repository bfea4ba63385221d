"""The filter grammar: parsing, Chroma `where` clauses, field names, constraint merging."""

import pytest

from recagent.tools.errors import ConfigError
from recagent.tools.filters import (
    Filter,
    constraint_key,
    field_name,
    matches,
    merge_constraints,
    parse_filter,
    parse_where,
    where_fields,
)

FIELDS = {
    "genres": {"type": "list", "values": ["Comedy", "Horror"]},
    "year": {"type": "int"},
    "baseColour": {"type": "str", "values": ["Navy Blue", "Red"]},
    "articleType": {"type": "str"},
    "price": {"type": "float"},
}


def test_one_filter_is_read_into_its_parts():
    assert parse_filter("genre!=Horror") == Filter("genre", "!=", "Horror")
    assert parse_filter("  year >= 1990 ") == Filter("year", ">=", "1990")
    assert parse_filter("colour=Navy Blue") == Filter("colour", "=", "Navy Blue")
    assert parse_filter("genre!=Horror").negative and not parse_filter("year<1990").negative
    assert parse_filter("year") is None and parse_filter("=Comedy") is None and parse_filter(3) is None


def test_where_filters_are_checked_against_the_catalog_fields():
    assert parse_where(["genre=comedy", "year=1990..1999"], FIELDS) == {
        "$and": [{"genres": {"$contains": "Comedy"}}, {"year": {"$gte": 1990}}, {"year": {"$lte": 1999}}]
    }
    assert parse_where(["colour!=navy blue"], FIELDS) == {"baseColour": {"$ne": "Navy Blue"}}
    assert parse_where(["genres!=Horror"], FIELDS) == {"genres": {"$not_contains": "Horror"}}
    assert parse_where(["price<9.5"], FIELDS) == {"price": {"$lt": 9.5}}
    assert parse_where([], FIELDS) is None
    with pytest.raises(ConfigError, match="unknown filter field 'size'"):
        parse_where(["size<10"], FIELDS)
    with pytest.raises(ConfigError, match="'Western' is not a value of 'genres'"):
        parse_where(["genre=Western"], FIELDS)
    with pytest.raises(ConfigError, match="needs a number"):
        parse_where(["year>=old"], FIELDS)
    with pytest.raises(ConfigError, match="cannot read filter"):
        parse_where(["year"], FIELDS)
    with pytest.raises(ConfigError, match="is a list"):
        parse_where(["genres>Comedy"], FIELDS)
    with pytest.raises(ConfigError, match="does not apply to text field"):
        parse_where(["colour>Red"], FIELDS)


def test_field_names_match_singular_plural_case_and_aliases():
    assert field_name("Genre", FIELDS) == "genres" and field_name("YEARS", FIELDS) == "year"
    assert field_name("color", FIELDS) == "baseColour" and field_name("type", FIELDS) == "articleType"


def test_where_fields_finds_the_fields_of_nested_clauses():
    assert where_fields({"$and": [{"baseColour": "Black"}, {"year": {"$gte": 2010}}]}) == {"baseColour", "year"}
    assert where_fields({"gender": "Men"}) == {"gender"} and where_fields(None) == set()


def test_a_new_constraint_replaces_the_old_one_on_the_same_field_and_operator():
    assert merge_constraints(["year<2000", "genre=Comedy"], ["year<1990"]) == ["genre=Comedy", "year<1990"]
    # list fields keep one constraint per value; scalar fields one per operator
    assert merge_constraints(["genre=Comedy"], ["genre=Drama"]) == ["genre=Comedy", "genre=Drama"]
    assert merge_constraints(["genre!=Horror"], ["genres!=horror"]) == ["genres!=horror"]
    assert merge_constraints(["year>1980"], ["year<1990"]) == ["year>1980", "year<1990"]
    assert constraint_key("genres!=Horror") == ("genre", "!=", "horror") and constraint_key("junk") == ("junk", "", "")


def test_matches_decides_a_where_in_memory_as_the_store_does():
    item = {"genres": ["Comedy", "Horror"], "year": 1995, "baseColour": "Red"}
    where = parse_where(["genre=Comedy", "year=1990..1999", "colour!=Navy Blue"], FIELDS)
    assert matches(item, where) and matches(item, None)
    assert not matches(item, parse_where(["genre!=Horror"], FIELDS))
    assert not matches(item, parse_where(["year>=2000"], FIELDS))
    assert not matches({"genres": ["Comedy"]}, parse_where(["year<2000"], FIELDS))  # no year: no pass
    assert matches({"genres": ["Comedy"]}, parse_where(["colour!=Red"], FIELDS))  # nothing to differ from
