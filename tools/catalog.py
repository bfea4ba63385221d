"""Catalogs: the item format, loaders for MovieLens and the fashion products, and for users' own CSV or JSON lines.

The catalog format (see README "Your own catalog"): every item has an `id` and a `title`; optionally a
`description` (free text that is embedded with the title), an `image` (a path, relative to the catalog
file), and any other fields, which become filterable metadata (strings, numbers, booleans, or lists of
strings; in CSV a value with `|` is a list).
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import CatalogError
from .settings import Settings

Scalar = str | int | float | bool
MetaValue = Scalar | list[str]
BUILTIN_CATALOGS = ("movies", "fashion")


@dataclass(frozen=True)
class RowError:
    """One malformed row: where it is and what is wrong with it."""

    file: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.message}"


@dataclass
class Item:
    """One catalog item: what is embedded (title and description), what is filterable (metadata), an image."""

    id: str
    title: str
    description: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)  # MetaValue values
    image: str | None = None

    def document(self) -> str:
        """The text that is embedded for retrieval."""
        return f"{self.title}. {self.description}".strip() if self.description else self.title

    def fingerprint(self) -> str:
        """A hash of everything indexed for this item: a change means it must be re-indexed."""
        blob = json.dumps([self.document(), self.metadata, self.image], sort_keys=True, ensure_ascii=False)
        return hashlib.sha1(blob.encode()).hexdigest()[:16]


@dataclass
class Catalog:
    """Items of one catalog and the rows that could not be read."""

    name: str
    items: list[Item]
    errors: list[RowError] = field(default_factory=list)
    source: str = ""

    def by_id(self) -> dict[str, Item]:
        return {item.id: item for item in self.items}


# ---- values --------------------------------------------------------------------------------------

_NUMBER = re.compile(r"^-?\d+(\.\d+)?$")


def _coerce(value: str) -> MetaValue | None:
    """A CSV cell as metadata: '' -> None, '12' -> 12, '1.5' -> 1.5, 'a|b' -> ['a', 'b'], else the string."""
    value = value.strip()
    if not value:
        return None
    if "|" in value:
        return [v.strip() for v in value.split("|") if v.strip()]
    if _NUMBER.match(value):
        return float(value) if "." in value else int(value)
    if value.lower() in ("true", "false"):
        return value.lower() == "true"
    return value


def _check_meta(key: str, value) -> MetaValue | None:
    if value is None or value == "" or value == []:
        return None
    if isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value
    raise ValueError(f"field '{key}' must be a string, number, boolean or list of strings, got {value!r}")


def _resolve_image(value, base: Path) -> str | None:
    if not value:
        return None
    path = Path(str(value)).expanduser()
    return str(path if path.is_absolute() else base / path)


def item_from_record(record: dict, base: Path) -> Item:
    """An Item from one parsed row of the generic format; raises ValueError saying what is wrong."""
    if not isinstance(record, dict):
        raise ValueError("row is not an object")
    item_id = record.get("id")
    if item_id is None or str(item_id).strip() == "":
        raise ValueError("missing 'id'")
    title = record.get("title")
    if not isinstance(title, str) or not title.strip():
        raise ValueError("missing 'title'")
    description = record.get("description") or ""
    if not isinstance(description, str):
        raise ValueError("'description' must be text")
    meta_in = dict(record.get("metadata") or {})
    for key, value in record.items():
        if key not in ("id", "title", "description", "image", "metadata"):
            meta_in[key] = value
    metadata = {}
    for key, value in meta_in.items():
        checked = _check_meta(str(key), value)
        if checked is not None:
            metadata[str(key)] = checked
    return Item(
        str(item_id).strip(), title.strip(), description.strip(), metadata, _resolve_image(record.get("image"), base)
    )


# ---- generic files --------------------------------------------------------------------------------


def _read_csv_rows(path: Path, errors: list[RowError]):
    """Yield (line number, row dict) from a CSV file; rows with the wrong number of columns become errors."""
    with open(path, newline="", encoding="utf-8", errors="replace") as fh:
        reader = csv.reader(fh)
        try:
            header = next(reader)
        except StopIteration:
            return
        header = [h.strip() for h in header]
        while True:
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                errors.append(RowError(str(path), reader.line_num, f"unreadable CSV: {exc}"))
                continue
            if not row or all(not c.strip() for c in row):
                continue
            if len(row) != len(header):
                errors.append(RowError(str(path), reader.line_num, f"expected {len(header)} columns, found {len(row)}"))
                continue
            yield reader.line_num, dict(zip(header, row))


def load_file_catalog(path: Path, name: str | None = None) -> Catalog:
    """A catalog from a user's CSV or JSON-lines file in the documented format."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise CatalogError(f"catalog file {path} does not exist")
    items, errors, seen = [], [], set()
    if path.suffix.lower() in (".jsonl", ".ndjson", ".json"):
        rows = []
        with open(path, encoding="utf-8", errors="replace") as fh:
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    rows.append((lineno, json.loads(line)))
                except json.JSONDecodeError as exc:
                    errors.append(RowError(str(path), lineno, f"not valid JSON ({exc.msg})"))
    elif path.suffix.lower() in (".csv", ".tsv"):
        rows = [
            (n, {k: (v if k in ("id", "title", "description", "image") else _coerce(v)) for k, v in r.items()})
            for n, r in _read_csv_rows(path, errors)
        ]
    else:
        raise CatalogError(f"{path}: unknown catalog format '{path.suffix}' (use .csv or .jsonl)")
    for lineno, record in rows:
        try:
            item = item_from_record(record, path.parent)
        except ValueError as exc:
            errors.append(RowError(str(path), lineno, str(exc)))
            continue
        if item.id in seen:
            errors.append(RowError(str(path), lineno, f"duplicate id '{item.id}'"))
            continue
        seen.add(item.id)
        items.append(item)
    errors.sort(key=lambda e: e.line)
    return Catalog(name or path.stem, items, errors, str(path))


# ---- MovieLens -----------------------------------------------------------------------------------

_YEAR = re.compile(r"\s*\((\d{4})(?:[-–]\d{0,4})?\)\s*$")
_ARTICLE = re.compile(r"^(.*), (The|A|An|Les|La|Le|L'|Il|El|Das|Die|Der|Los|Las|Det|Den)$")


def split_movie_title(raw: str) -> tuple[str, int | None]:
    """'American President, The (1995)' -> ('The American President', 1995)."""
    raw = raw.strip()
    match = _YEAR.search(raw)
    year = int(match.group(1)) if match else None
    title = raw[: match.start()].strip() if match else raw
    # MovieLens moves articles to the end, also before an alternative title in parentheses.
    head, paren, rest = title.partition(" (")
    art = _ARTICLE.match(head)
    if art:
        sep = "" if art.group(2).endswith("'") else " "
        head = f"{art.group(2)}{sep}{art.group(1)}"
    return (head + paren + rest if paren else head), year


def load_movies(data_dir: Path, top_tags: int = 8) -> Catalog:
    """MovieLens latest-small: title, year, genres, most frequent tags, links, poster path, rating counts."""
    root = data_dir / "movielens"
    movies_csv = root / "movies.csv"
    if not movies_csv.is_file():
        raise CatalogError(f"{movies_csv} not found: the movie catalog needs MovieLens (`recagent data download`)")
    errors: list[RowError] = []
    tags: dict[str, Counter] = defaultdict(Counter)
    if (root / "tags.csv").is_file():
        for _, row in _read_csv_rows(root / "tags.csv", errors):
            tag = row["tag"].strip().lower()
            if tag:
                tags[row["movieId"]][tag] += 1
    links = {}
    if (root / "links.csv").is_file():
        links = {row["movieId"]: row for _, row in _read_csv_rows(root / "links.csv", errors)}
    counts: Counter[str] = Counter()
    sums: defaultdict[str, float] = defaultdict(float)
    if (root / "ratings.csv").is_file():
        for _, row in _read_csv_rows(root / "ratings.csv", errors):
            try:
                sums[row["movieId"]] += float(row["rating"])
                counts[row["movieId"]] += 1
            except ValueError:
                pass
    items = []
    for lineno, row in _read_csv_rows(movies_csv, errors):
        movie_id = row.get("movieId", "").strip()
        if not movie_id.isdigit() or not row.get("title", "").strip():
            errors.append(RowError(str(movies_csv), lineno, "missing movieId or title"))
            continue
        title, year = split_movie_title(row["title"])
        genres = [g for g in row.get("genres", "").split("|") if g and g != "(no genres listed)"]
        movie_tags = [t for t, _ in tags[movie_id].most_common(top_tags)]
        parts = []
        if genres:
            parts.append("Genres: " + ", ".join(genres) + ".")
        if movie_tags:
            parts.append("Tags: " + ", ".join(movie_tags) + ".")
        metadata: dict[str, Any] = {"title": title}
        if year:
            metadata["year"] = year
        if genres:
            metadata["genres"] = genres
        if movie_tags:
            metadata["tags"] = movie_tags
        link = links.get(movie_id, {})
        if link.get("imdbId", "").strip():
            metadata["imdb_id"] = "tt" + link["imdbId"].strip()
        if link.get("tmdbId", "").strip():
            metadata["tmdb_id"] = link["tmdbId"].strip()
        metadata["ratings"] = counts[movie_id]
        if counts[movie_id]:
            metadata["rating"] = round(sums[movie_id] / counts[movie_id], 2)
        poster = root / "posters" / f"{movie_id}.jpg"
        display = f"{title} ({year})" if year else title
        items.append(Item(movie_id, display, " ".join(parts), metadata, str(poster) if poster.is_file() else None))
    return Catalog("movies", items, errors, str(movies_csv))


# ---- fashion -------------------------------------------------------------------------------------

_PLURAL_ONLY = {
    "jeans",
    "shorts",
    "trousers",
    "briefs",
    "capris",
    "leggings",
    "sunglasses",
    "pants",
    "boxers",
    "trunks",
    "tights",
    "jeggings",
    "salwar",
    "churidar",
}


def singular(noun_phrase: str) -> str:
    """'Dresses' -> 'Dress', 'Casual Shoes' -> 'Casual Shoe', 'Jeans' stays: queries say "a red dress"."""
    words = noun_phrase.split()
    if not words or words[-1].lower() in _PLURAL_ONLY:
        return noun_phrase
    last = words[-1]
    if re.search(r"(ss|sh|ch|x)es$", last):
        last = last[:-2]
    elif last.endswith("s") and not last.endswith("ss"):
        last = last[:-1]
    return " ".join(words[:-1] + [last])


FASHION_FIELDS = ("gender", "masterCategory", "subCategory", "articleType", "baseColour", "season", "usage")


def load_fashion(data_dir: Path) -> Catalog:
    """The fashion products: display name, type, colour, gender, season, usage, year, photo."""
    root = data_dir / "fashion"
    products = root / "products.csv"
    if not products.is_file():
        raise CatalogError(f"{products} not found: the fashion catalog needs the fashion product data")
    errors: list[RowError] = []
    items = []
    for lineno, row in _read_csv_rows(products, errors):
        pid, name = row.get("id", "").strip(), row.get("productDisplayName", "").strip()
        if not pid or not name:
            errors.append(RowError(str(products), lineno, "missing id or productDisplayName"))
            continue
        metadata: dict[str, Any] = {k: row[k].strip() for k in FASHION_FIELDS if row.get(k, "").strip()}
        year = row.get("year", "").strip()
        if year:
            try:
                metadata["year"] = int(float(year))
            except ValueError:
                errors.append(RowError(str(products), lineno, f"year '{year}' is not a number"))
                continue
        description = " ".join(
            f"{metadata.get('baseColour', '')} {singular(metadata.get('articleType', ''))} for "
            f"{metadata.get('gender', '')}. {metadata.get('usage', '')} {metadata.get('subCategory', '')}, "
            f"{metadata.get('season', '')}.".split()
        )
        image = root / (row.get("image", "").strip() or f"images/{pid}.jpg")
        items.append(Item(pid, name, description, metadata, str(image) if image.is_file() else None))
    return Catalog("fashion", items, errors, str(products))


# ---- how to speak of a catalog ---------------------------------------------------------------------


@dataclass(frozen=True)
class CatalogProfile:
    """How the agent speaks of a catalog's items: the kind of recommender, what an item is called, which fields
    the planner may filter on, which fields the compact result lines and the reason line are made of."""

    kind: str = "shopping"  # the planner prompt's word: "a {kind} recommender"
    noun: str = "item"  # "What kind of {noun} are you in the mood for?"
    hidden: tuple[str, ...] = ("title", "tags", "imdb_id", "tmdb_id", "ratings", "rating")  # not planner filters
    compact: tuple[str, ...] = ("year", "genres", "tags", "articleType", "baseColour", "gender", "usage")
    reason_lists: tuple[str, ...] = ("genres",)  # list fields whose first values open the reason line
    reason_phrase: str = ""  # a phrase of scalar fields, e.g. "{baseColour} {articleType} for {gender}"
    reason_phrase_needs: str = ""  # ... said only when the item has this field
    tags: str = "tags"  # a list field read as "known for ..."
    rating: str = "rating"  # mean rating field, said with the count field when there are enough ratings
    rating_count: str = "ratings"
    rating_source: str = "users"  # "rated 4.1/5 by 120 {rating_source}"
    time_field: str = "year"  # the field "older" and "newer" refer to
    # Fields whose values, named in a message ("black", "sports shoes", "for men", "a comedy"), plain code turns into
    # filters when it plans a turn without the LLM (agent/rules.py); a named value of a `kinds` field in a follow-up
    # ("now a watch") is a new search, which the planner decides.
    facets: tuple[str, ...] = ()
    kinds: tuple[str, ...] = ()
    # Standing negations ("no musicals") hold in every later search of the conversation until taken back; so do the
    # positive constraints on these fields ("for men"), unless the new request names another value.
    persist: tuple[str, ...] = ()
    # What the reply writer is told the picks share, instead of their titles (agent/writer.py: shared_traits)
    traits: tuple[str, ...] = ("genres", "articleType", "baseColour", "gender", "usage", "year")


PROFILES = {
    "movies": CatalogProfile(kind="movie", noun="movie", rating_source="MovieLens users", facets=("genres",)),
    "fashion": CatalogProfile(
        reason_phrase="{baseColour} {articleType} for {gender}",
        reason_phrase_needs="articleType",
        facets=("gender", "masterCategory", "subCategory", "articleType", "baseColour"),
        kinds=("masterCategory", "subCategory", "articleType"),
        persist=("gender",),
        traits=("articleType", "baseColour", "gender", "usage"),  # a product's year is when it was listed
    ),
}


def catalog_profile(name: str) -> CatalogProfile:
    """The profile of a built-in catalog; a user's catalog gets the generic one (its fields speak for themselves)."""
    return PROFILES.get(name, CatalogProfile())


def load_catalog(name_or_path: str, settings: Settings | None = None) -> Catalog:
    """A built-in catalog by name ('movies', 'fashion') or a user's catalog file by path."""
    if name_or_path in BUILTIN_CATALOGS:
        data = (settings or Settings.load()).require_data()
        return load_movies(data) if name_or_path == "movies" else load_fashion(data)
    path = Path(name_or_path).expanduser()
    if path.exists():
        return load_file_catalog(path)
    raise CatalogError(
        f"unknown catalog '{name_or_path}': use one of {', '.join(BUILTIN_CATALOGS)} "
        "or the path of a .csv or .jsonl catalog file"
    )
