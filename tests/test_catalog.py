"""Catalog loaders on the real data, and the generic CSV / JSON-lines format with malformed rows."""

import json

import pytest

from recagent.tools.catalog import load_catalog, load_file_catalog, singular, split_movie_title
from recagent.tools.errors import CatalogError, ConfigError


def test_movies_catalog_has_every_movie_with_fields(settings):
    cat = load_catalog("movies", settings)
    assert len(cat.items) == 9742 and not cat.errors
    toy = cat.by_id()["1"]
    assert toy.title == "Toy Story (1995)"
    assert toy.metadata["year"] == 1995
    assert {"Animation", "Children"} <= set(toy.metadata["genres"])
    assert "pixar" in toy.metadata["tags"]
    assert toy.metadata["imdb_id"] == "tt0114709" and toy.metadata["ratings"] > 200
    assert toy.image and toy.image.endswith("posters/1.jpg")
    assert "Animation" in toy.document()


@pytest.mark.parametrize(
    "raw, title, year",
    [
        ("American President, The (1995)", "The American President", 1995),
        (
            "City of Lost Children, The (Cité des enfants perdus, La) (1995)",
            "The City of Lost Children (Cité des enfants perdus, La)",
            1995,
        ),
        ("Babylon 5", "Babylon 5", None),
        ("Misérables, Les (1995)", "Les Misérables", 1995),
    ],
)
def test_movie_titles_are_made_readable(raw, title, year):
    assert split_movie_title(raw) == (title, year)


def test_fashion_catalog_has_every_product_with_photo(settings):
    cat = load_catalog("fashion", settings)
    assert len(cat.items) == 9583 and not cat.errors
    shirt = cat.by_id()["15970"]
    assert shirt.metadata["baseColour"] == "Navy Blue" and shirt.metadata["articleType"] == "Shirts"
    assert shirt.image.endswith("images/15970.jpg")
    assert "Navy Blue Shirt for Men" in shirt.document()


def test_singular_keeps_plural_only_words():
    assert singular("Dresses") == "Dress" and singular("Casual Shoes") == "Casual Shoe"
    assert singular("Jeans") == "Jeans" and singular("Track Pants") == "Track Pants"


def test_csv_catalog_reports_malformed_rows_with_line_numbers(tmp_path):
    path = tmp_path / "books.csv"
    path.write_text(
        "id,title,description,genre,pages,image\n"
        "b1,Dune,Desert planet epic,SF|Classic,412,covers/dune.jpg\n"
        "b2,,No title here,SF,100,\n"
        "b3,Emma,Comedy of manners,Romance,474\n"
        "b4,Neuromancer,Cyberpunk,SF,271,\n"
        "b1,Dune again,Duplicate,SF,1,\n"
    )
    cat = load_file_catalog(path)
    assert [it.id for it in cat.items] == ["b1", "b4"]
    dune = cat.items[0]
    assert dune.metadata == {"genre": ["SF", "Classic"], "pages": 412}
    assert dune.image == str(tmp_path / "covers" / "dune.jpg")
    errors = {e.line: e.message for e in cat.errors}
    assert errors == {3: "missing 'title'", 4: "expected 6 columns, found 5", 6: "duplicate id 'b1'"}
    assert str(cat.errors[0]).startswith(f"{path}:3:")


def test_jsonl_catalog_reports_bad_json_and_bad_fields(tmp_path):
    path = tmp_path / "items.jsonl"
    rows = [
        json.dumps({"id": 1, "title": "Lamp", "description": "Brass desk lamp", "metadata": {"price": 30.5}}),
        "{not json",
        json.dumps({"id": 2, "title": "Chair", "colour": {"nested": True}}),
        "",
        json.dumps({"id": 3, "title": "Desk", "tags": ["oak", "large"], "in_stock": True}),
    ]
    path.write_text("\n".join(rows) + "\n")
    cat = load_file_catalog(path)
    assert [it.id for it in cat.items] == ["1", "3"]
    assert cat.items[0].metadata == {"price": 30.5}
    assert cat.items[1].metadata == {"tags": ["oak", "large"], "in_stock": True}
    assert [e.line for e in cat.errors] == [2, 3]
    assert "not valid JSON" in cat.errors[0].message and "colour" in cat.errors[1].message


def test_unknown_catalog_and_missing_data_say_what_to_do(settings, tmp_path):
    with pytest.raises(CatalogError, match="unknown catalog 'boats'"):
        load_catalog("boats", settings)
    with pytest.raises(ConfigError, match="recagent data download"):
        load_catalog("movies", settings.with_(data=tmp_path / "nowhere"))
