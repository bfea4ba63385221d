"""Feedback that acts at once: a user's taste vector from their likes and dislikes (tools/ranking/taste.py), the
agent's next turn ranked with it, and `forget` taking it away. The shipped head, the real movie index, a real
feedback store in the test home; the planner is scripted so that both turns search the same way."""

import json

import numpy as np
import pytest
from conftest import run_cli

from recagent.agent import Agent, ScriptedLLM
from recagent.tools.feedback import forget_user, record_feedback, user_events
from recagent.tools.ranking import load_ranker
from recagent.tools.ranking.taste import DISLIKE, taste_space

PIXAR = ["1", "2355", "3114", "4886", "6377"]  # Toy Story, A Bug's Life, Toy Story 2, Monsters Inc., Finding Nemo
SEARCH = {"tool": "search_catalog", "args": {"query": "a funny movie", "filters": ["genre=Comedy"]}}


@pytest.fixture(scope="module")
def space(settings):
    ranker = load_ranker(settings, "movies")
    assert ranker is not None
    return taste_space(ranker)


def test_the_taste_vector_is_the_mean_of_signed_item_vectors_and_the_latest_signal_wins(space):
    v = space.vectors
    a, b, c = (space.pos[i] for i in ("1", "2355", "296"))  # Toy Story, A Bug's Life, Pulp Fiction
    taste = space.taste([("1", 1), ("2355", 1)])
    assert np.allclose(taste.vector, (v[a] + v[b]) / 2) and taste.bias == 1.0
    taste = space.taste([("1", 1), ("2355", 1), ("296", -1)])
    assert np.allclose(taste.vector, (v[a] + v[b] - DISLIKE * v[c]) / 3)
    assert taste.bias == pytest.approx(1 / 3)
    assert space.taste([("296", 1), ("296", -1)]).signals == -1  # liked, then disliked: disliked
    assert space.taste([("no-such-movie", 1)]) is None and space.taste([]) is None
    r = space.scores(space.taste([("1", 1)]))
    assert r.shape == (len(space.pos),)
    assert np.allclose(r, v @ v[a] + 1.0 + space.bias)  # r(u, i) = u . v_i + b_u + b_i


def test_a_dislike_pushes_the_items_near_it_down(space):
    liked = space.taste([(i, 1) for i in PIXAR])
    both = space.taste([*((i, 1) for i in PIXAR), ("296", -1)])  # and Pulp Fiction disliked
    pulp = space.vectors[space.pos["296"]]
    near = np.argsort(-(space.vectors @ pulp))[1:21]  # the 20 items closest to it in the head's space
    drop = space.scores(both)[near] - space.scores(liked)[near]
    assert (drop < 0).all()


def test_feedback_reshapes_the_next_turn_and_forget_takes_it_back(settings, movies_index):
    agent = Agent(ScriptedLLM([SEARCH, "Comedies."] * 3), "movies", settings.with_(code_plans=False))
    user = "taste-test-user"
    forget_user(settings, user)

    def shown(feedback):
        reply = agent.turn(agent.new_conversation(), "Something funny for tonight", feedback=feedback)
        assert reply.error is None
        return [item["id"] for item in reply.items]

    before = shown(None)
    for item in PIXAR:
        record_feedback(settings, user, item, "movies", +1)
    events = user_events(settings, user, "movies")
    assert events == [(i, 1) for i in PIXAR]
    after = shown(events)
    assert after != before
    taste = taste_space(agent.ranker()).scores(taste_space(agent.ranker()).taste(events))
    pos = agent.ranker().signals.pos
    assert np.mean([taste[pos[i]] for i in after]) > np.mean([taste[pos[i]] for i in before])
    assert forget_user(settings, user) == len(PIXAR)
    assert user_events(settings, user, "movies") == []
    assert shown(user_events(settings, user, "movies")) == before  # nothing left of the taste


def test_eval_feedback_measures_the_curve_on_held_out_users(env, tmp_path):
    out, plot = tmp_path / "feedback.json", tmp_path / "curve.png"
    run = run_cli(env, "eval", "feedback", "--limit", "20", "--json", str(out), "--plot", str(plot), timeout=600)
    assert run.returncode == 0, run.stderr
    figures = json.loads(out.read_text())
    assert figures["users"] == "test" and figures["n_users"] == 20
    assert set(figures["by_k"]) == {"1", "3", "5", "10"}
    five = figures["by_k"]["5"]
    assert five["users"] > 10 and five["recall@10_with"] > five["recall@10_without"]
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| revealed likes k |" in run.stdout
