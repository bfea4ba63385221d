"""The ranking head: features, its signals (prepared once, saved in the home, loaded without the raw datasets), a
short training run (checkpoint, resume, early stopping, seed), loading, and that the shipped head ranks better than
popularity on data it was not trained or tuned on."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from recagent.evals.eval_redial import ranks_of
from recagent.tools.datasets import ranking_signals
from recagent.tools.datasets.ranking_signals import Signals, SignalSources, item_knn, prepare_signals, signals_path
from recagent.tools.datasets.redial import default_mapping, load_dialogues, protocol_samples, redial_dir
from recagent.tools.datasets.splits import movielens_split
from recagent.tools.errors import MissingModelError
from recagent.tools.feedback import record_feedback
from recagent.tools.models import embed_texts
from recagent.tools.ranking import (
    CONVERSATION,
    FEATURES,
    HISTORY,
    SHIPPED,
    Context,
    RankerConfig,
    conversation_context,
    embed_contexts,
    load_ranker,
)
from recagent.tools.ranking.features import features, recency_weights, requested_genres
from recagent.tools.ranking.model import RankingHead, batch_inputs, load_checkpoint
from recagent.tools.text import GENRE_NAMES
from recagent.tools.train.ranker import feedback_examples, train_ranker


@pytest.fixture(scope="module")
def signals(settings, movies):
    """The signals the agent's head loads: prepared into the test home the first time, then read from there."""
    return Signals.load(prepare_signals(settings, movies))


def _by_title(movies, title):
    return next(it.id for it in movies.items if it.title == title)


def test_features_follow_the_context(settings, movies, signals):
    toy = _by_title(movies, "Toy Story (1995)")
    ctx = Context(items=[toy], text="seeker: any funny animated movies for my kids?", exclude={toy})
    ctx.text_vector = embed_texts([ctx.text], settings)[0]
    f = features(signals, [ctx], RankerConfig())[0]
    col = {name: j for j, name in enumerate(FEATURES)}
    toy2 = signals.pos[_by_title(movies, "Toy Story 2 (1999)")]
    heat = signals.pos[_by_title(movies, "Heat (1995)")]
    for name in ("content", "ml_cooc", "genre"):
        assert f[toy2, col[name]] > f[heat, col[name]], name
    assert f[:, col["constraint"]].min() == 1.0  # no filters: every item passes
    asked = requested_genres("something scary, or a comedy")
    assert {g for g, a in zip(GENRE_NAMES, asked) if a} == {"Horror", "Comedy"}
    w = recency_weights(3, 0.5)
    assert w.sum() == pytest.approx(1.0) and w[2] > w[1] > w[0]  # the newest weighs most


def test_conversation_features_knn_content_genres_and_texts(settings, movies, signals):
    toy = _by_title(movies, "Toy Story (1995)")
    messages = [
        ("seeker", "Hi! I loved Toy Story (1995)."),
        ("recommender", "What else do you like?"),
        ("seeker", "something animated and funny for my kids"),
    ]
    ctx = conversation_context(messages, [toy], {toy})
    assert ctx.seeker_text.endswith("funny for my kids") and ctx.last_text == messages[-1][1]
    embed_contexts([ctx], settings)
    assert ctx.text_vector is not None and ctx.seeker_vector is not None and ctx.last_vector is not None
    f = features(signals, [ctx], RankerConfig())[0]
    col = {name: j for j, name in enumerate(FEATURES)}
    toy2 = signals.pos[_by_title(movies, "Toy Story 2 (1999)")]
    heat = signals.pos[_by_title(movies, "Heat (1995)")]
    for name in ("ml_knn", "ml_knn_all", "content_max", "genre_liked", "text_seeker", "text_last"):
        assert f[toy2, col[name]] > f[heat, col[name]], name
    assert 0.0 <= f[:, col["ml_pop_recent"]].min() and f[:, col["ml_pop_recent"]].max() == pytest.approx(1.0)
    # a rating history: no item-kNN from the matrix that holds the user's own ratings, no text
    hist = Context(items=[toy], kind=HISTORY, exclude={toy})
    h = features(signals, [hist], RankerConfig())[0]
    for name in ("ml_knn", "ml_knn_all", "content_max", "text_seeker", "text_last"):
        assert not h[:, col[name]].any(), name
    # each item keeps at most k neighbours, never itself
    knn = item_knn(signals.R, 5)
    assert np.diff(knn.indptr).max() <= 5 and knn.diagonal().max() == 0.0


def test_conversations_are_scored_by_the_feature_mixture(settings, movies, signals):
    """With conversation_embeddings off (the default), the id embeddings and item biases do not move the
    scores of a conversation, only those of a rating history."""
    toy = _by_title(movies, "Toy Story (1995)")
    ctxs = [
        Context(items=[toy], text="seeker: a funny movie", exclude={toy}, kind=CONVERSATION),
        Context(items=[toy], kind=HISTORY, exclude={toy}),
    ]
    embed_contexts(ctxs, settings)
    config = RankerConfig()
    torch.manual_seed(0)
    head = RankingHead(signals.n, config)
    content = torch.from_numpy(signals.content)
    with torch.no_grad():
        head.feature_weights.normal_()
        before = head(*batch_inputs(signals, ctxs, config), content)
        head.item_id.weight.normal_()
        head.item_bias.weight.normal_()
        after = head(*batch_inputs(signals, ctxs, config), content)
    assert torch.allclose(before[0], after[0]) and not torch.allclose(before[1], after[1])


def test_redial_counts_leave_the_dialogue_out(settings, movies, signals):
    """A training dialogue's own suggestion must not show in its own ReDial features (no leak of the target)."""
    titles = {it.id: it.title for it in movies.items}
    dialogues = load_dialogues(redial_dir(settings) / "train.jsonl", limit=40)
    samples = protocol_samples(dialogues, default_mapping(settings), titles)
    col = FEATURES.index("redial_cooc")
    leaked = 0
    for s in samples:
        if not s.mentions:
            continue
        ctx = Context(items=[m.item for m in s.mentions], dialogue=s.dialogue, exclude=s.exclude)
        own = features(signals, [ctx], RankerConfig())[0, signals.pos[s.target], col]
        ctx.dialogue = None
        with_own = features(signals, [ctx], RankerConfig())[0, signals.pos[s.target], col]
        assert with_own > 0  # its own dialogue counts the pair
        leaked += own >= with_own - 1e-6 and own > 0 and with_own == own
    assert leaked < len(samples) // 4  # only pairs that other dialogues also have remain


def test_signals_are_prepared_once_and_loaded_without_the_raw_data(settings, movies, signals, tmp_path, monkeypatch):
    path = signals_path(settings, "movies")
    assert path.is_file() and path.parent == settings.home / "ranker"
    assert signals_path(settings, "movies", SignalSources(knn=50)) != path  # other sources, another file
    # a saved copy reads back the same arrays, the per-dialogue counts included
    again = Signals.load(signals.save(tmp_path / "copy.npz"))
    assert again.ids == signals.ids and again.users == signals.users and again.n_dialogues == signals.n_dialogues
    for name in ("content", "popularity", "quality", "year", "genres", "recent", "suggested", "mentioned"):
        assert np.array_equal(getattr(again, name), getattr(signals, name)), name
    for name in ("R", "knn", "D", "M"):
        assert (getattr(again, name) != getattr(signals, name)).nnz == 0, name
    assert again.per_dialogue == signals.per_dialogue
    assert (
        len(signals.per_dialogue)
        == signals.n_dialogues
        == sum(len(load_dialogues(redial_dir(settings) / name)) for name in SignalSources().redial_files)
    )

    # with the file in place, loading the head reads neither ratings.csv nor the dialogues nor the mapping
    def refuse(*args, **kwargs):
        raise AssertionError("the raw data was read")

    for name in ("build_signals", "read_ratings", "load_dialogues", "redial_mapping"):
        monkeypatch.setattr(ranking_signals, name, refuse)
    copy = tmp_path / "ranker.pt"  # a new path: nothing cached for it yet
    copy.write_bytes(SHIPPED.read_bytes())
    ranker = load_ranker(settings, path=copy)
    assert ranker is not None and ranker.signals.ids == signals.ids
    assert load_ranker(settings, path=copy) is ranker  # loaded once, then shared


def test_a_broken_checkpoint_or_signals_file_says_so(settings, tmp_path):
    bad = tmp_path / "broken.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(MissingModelError, match="broken.pt cannot be read"):
        load_ranker(settings, path=bad)
    torch.save({"something": "else"}, tmp_path / "other.pt")
    with pytest.raises(MissingModelError, match="other.pt is not one"):
        load_ranker(settings, path=tmp_path / "other.pt")
    (tmp_path / "signals.npz").write_bytes(b"garbage")
    with pytest.raises(MissingModelError, match="delete the file"):
        Signals.load(tmp_path / "signals.npz")


def test_train_ranker_writes_resumes_and_stops_early(settings, tmp_path):
    out = tmp_path / "ranker.pt"
    small = dict(limit=12, ml_per_epoch=150, batch_size=64, progress=False, log=lambda m: None)
    first = train_ranker(settings, out, epochs=1, **small)
    assert out.is_file() and out.with_suffix(".state.pt").is_file()
    ckpt = load_checkpoint(out)
    assert ckpt["meta"]["seed"] == 0 and ckpt["meta"]["epochs_run"] == 1 and len(ckpt["ids"]) > 9000
    assert ckpt["meta"]["features"] == list(FEATURES)
    valid = first["history"][0]["redial_valid"]
    assert valid["recall@1"] <= valid["recall@10"] <= valid["recall@50"] >= 0.06  # measured 3 of 31 samples
    # the same command with more epochs resumes after epoch 1
    second = train_ranker(settings, out, epochs=2, **small)
    assert second["epochs_run"] == 2
    assert second["history"][0] == first["history"][0]
    # a fixed seed gives the same model
    again = tmp_path / "again.pt"
    train_ranker(settings, again, epochs=1, **small)
    a, b = load_checkpoint(again)["state_dict"], ckpt["state_dict"]
    assert max(float(np.abs(a[k].numpy() - b[k].numpy()).max()) for k in a) < 1e-4
    # nothing to learn (lr 0): no improvement after the first epoch, so it stops early
    stop = train_ranker(settings, tmp_path / "stop.pt", epochs=5, patience=1, lr=0.0, **small)
    assert stop["stopped_early"] and stop["epochs_run"] == 2
    # and the untrained head ranks worse than the head after one epoch of learning
    assert stop["history"][0]["redial_valid"]["recall@50"] < valid["recall@50"]
    ranker = load_ranker(settings, path=out)
    assert ranker is not None and ranker.meta["path"] == str(out)


def test_no_checkpoint_means_no_head(settings):
    assert load_ranker(settings, "fashion") is None  # only movies has a head
    assert load_ranker(settings.with_(models={"ranker": "none"}), "movies") is None


@pytest.mark.skipif(not SHIPPED.is_file(), reason="no shipped checkpoint")
def test_shipped_head_beats_popularity(settings, movies, signals):
    """On ReDial dev (never used for training or choices) and on MovieLens users' held-out last ratings."""
    ranker = load_ranker(settings, path=SHIPPED)
    assert ranker is not None and ranker.signals.ids == signals.ids
    titles = {it.id: it.title for it in movies.items}
    samples = protocol_samples(
        load_dialogues(redial_dir(settings) / "dev.jsonl", limit=60), default_mapping(settings), titles
    )
    ctxs = [conversation_context(s.messages, [m.item for m in s.mentions], s.exclude) for s in samples]
    targets = np.array([signals.pos[s.target] for s in samples])
    head = ranks_of(ranker.score(ctxs, settings), targets)
    pop = np.broadcast_to(signals.popularity, (len(samples), signals.n)).copy()
    for k, c in enumerate(ctxs):
        pop[k, [signals.pos[i] for i in c.exclude]] = -np.inf
    popular = ranks_of(pop, targets)
    assert (head < 50).mean() > (popular < 50).mean() + 0.1
    assert (head < 10).mean() > (popular < 10).mean()

    _, _, test, seqs = movielens_split(settings, signals.ids)
    users = [u for u in list(seqs)[:150] if u in test]
    ctxs = [Context(items=seqs[u][-20:], kind=HISTORY, exclude=set(seqs[u])) for u in users]
    targets = np.array([signals.pos[test[u]] for u in users])
    head = ranks_of(ranker.score(ctxs, settings), targets)
    pop = np.broadcast_to(signals.popularity, (len(users), signals.n)).copy()
    for k, c in enumerate(ctxs):
        pop[k, [signals.pos[i] for i in c.exclude]] = -np.inf
    assert (head < 10).mean() > (ranks_of(pop, targets) < 10).mean()


def test_feedback_becomes_training_examples(settings, tmp_path):
    home = settings.with_(home=tmp_path / "home")
    for item in ("1", "318", "356"):
        record_feedback(home, "ana", item, "movies", +1)
    record_feedback(home, "ana", "2", "movies", -1)
    record_feedback(home, "bo", "5", "fashion", +1)  # another catalog: not for the movie head
    positives, pairs = feedback_examples(home, history=20)
    assert [t for _, t in positives] == ["1", "318", "356"]
    assert positives[2][0].items == ["1", "318"]  # the liked items before it are the context
    assert {(t, bad) for _, t, bad in pairs} == {("1", "2"), ("318", "2"), ("356", "2")}
