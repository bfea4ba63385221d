"""The web page at `/` of `recagent serve`, in a real browser: Debian's chromium driven by Playwright (launched with
`executable_path`; Playwright cannot download its own browser here), against real services on loopback over the real
indexes: the scripted LLM where speed matters (a service in this process, served by uvicorn on a free port), the
real local model where it matters (a `recagent serve` process). Streamed cards with posters before the reply text,
refinement, a product photo by file, paste and drag and drop, speech by file and by the microphone (Chromium's fake
device playing an espeak-ng recording), feedback stored under the user's pseudonym, a failing LLM, a busy
conversation and a full service said clearly, a service with keys asking for one, markup from a catalog or the model
shown as text with no script run, path traversal answered 404, and the phone layout. RECAGENT_SCREENSHOTS=docs
writes the screenshots of the README there."""

from __future__ import annotations

import base64
import dataclasses
import http.client
import os
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from conftest import start_serve

from recagent.agent.llm import ScriptedLLM
from recagent.agent.service import Service, ServiceConfig, create_app
from recagent.agent.service.config import LOCAL_USER
from recagent.agent.service.page import CSP
from recagent.evals.eval_images import held_out_items
from recagent.evals.loopback import free_port
from recagent.tools.catalog import load_catalog
from recagent.tools.errors import LLMError
from recagent.tools.index import CatalogIndex
from recagent.tools.settings import Settings

sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright is not installed: pip install playwright")
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
if not Path(CHROMIUM).exists() and os.environ.get("RECAGENT_REQUIRE_BROWSER"):  # CI: never skip in silence
    pytest.fail("RECAGENT_REQUIRE_BROWSER is set but there is no chromium (apt-get install chromium)", pytrace=False)
if not Path(CHROMIUM).exists():
    pytest.skip(
        "no chromium: install Debian's chromium package (apt-get install chromium) for the browser tests",
        allow_module_level=True,
    )

pytestmark = pytest.mark.server

DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
TURN_SECONDS = 60  # a scripted turn in the browser; the real model gets longer
SPOKEN = "I want a scary movie about a shark"

# What the page shows, in the order it shows it, for each turn sent (the form submitted, or an audio file chosen):
# performance.now() (ms) and the mutation's sequence number when the user's message first shows what was heard
# (transcript), the first card appears (card) and the reply's text first appears (text).
TRACE = """
window.__turns = [];
let seq = 0;
const sent = () => window.__turns.push({ sent: performance.now() });
document.addEventListener("submit", sent, true);
document.addEventListener("change", (e) => {
  if (e.target && e.target.id === "audio" && e.target.files.length) sent();
}, true);
const words = (nodes) => [...nodes].some((n) => n.nodeType === 3 && n.data.trim() && n.data !== "(speaking...)");
const mark = (t, what, now) => { if (t[what] === undefined) { t[what] = now; t[what + "Seq"] = seq; } };
new MutationObserver((records) => {
  const t = window.__turns[window.__turns.length - 1];
  if (!t) return;
  const now = performance.now();
  const answer = [...document.querySelectorAll(".message.assistant")].pop();
  for (const r of records) {
    seq += 1;
    const node = r.target.nodeType === 1 ? r.target : r.target.parentElement;
    if (!node) continue;
    if (node.closest(".message.assistant") === answer) {
      if (node.matches(".cards") && r.addedNodes.length) mark(t, "card", now);
      if (node.closest(".reply") && words(r.addedNodes)) mark(t, "text", now);
    }
    if (node.closest(".message.user .text") && words(r.addedNodes)) mark(t, "transcript", now);
    for (const added of r.addedNodes) {
      const text = added.nodeType === 1 && added.matches(".message.user") && added.querySelector(".text");
      if (text && words(text.childNodes)) mark(t, "transcript", now);
    }
  }
}).observe(document, { subtree: true, childList: true, characterData: true });
"""

CARDS = """cards => cards.map(c => ({
  id: c.dataset.id,
  title: c.querySelector('.title').textContent,
  meta: c.querySelector('.meta').textContent,
  reason: c.querySelector('.reason').textContent,
  image: c.querySelector('img.poster') ? c.querySelector('img.poster').getAttribute('src') : null,
  alt: c.querySelector('img.poster') ? c.querySelector('img.poster').alt : null,
}))"""


def call(tool: str, **args: Any) -> dict:
    return {"tool": tool, "args": args}


SHARK = [call("search_catalog", query="scary shark attack", filters=["genre=Horror"]), "Here are some scary ones."]


def words_of_the_user(messages: list[dict]) -> dict:
    """A planner that searches for what the user said (shows that a transcript is what the turn is about)."""
    return call("search_catalog", query=messages[-1]["content"].rsplit("User: ", 1)[-1], filters=[])


def shots(tmp_path: Path) -> Path:
    """Where screenshots go: RECAGENT_SCREENSHOTS (docs/ for the README), else the test's temporary folder."""
    folder = Path(os.environ.get("RECAGENT_SCREENSHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


# ---- services and the browser ---------------------------------------------------------------------------------
class InProcess:
    """A Service over the scripted LLM, served by uvicorn on a free loopback port from a thread of this process."""

    def __init__(self, service: Service):
        self.service = service
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(create_app(service), host="127.0.0.1", port=self.port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="page-test-server", daemon=True)

    def __enter__(self) -> InProcess:
        self.thread.start()
        deadline = time.time() + 300
        while status(self.url, "/readyz")[0] != 200:
            assert time.time() < deadline and self.thread.is_alive(), "the service never became ready"
            time.sleep(0.1)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(30)

    def script(self, *entries: Any) -> ScriptedLLM:
        """The answers of the next LLM calls (planner, writer, ...)."""
        llm = ScriptedLLM(list(entries))
        self.service.llm.inner = llm
        return llm


def status(url: str, path: str) -> tuple[int, bytes, dict[str, str]]:
    """A GET of exactly this path (not normalised, as a hostile client sends it): status, body, headers."""
    host, port = url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        connection.putrequest("GET", path, skip_accept_encoding=True)
        connection.endheaders()
        response = connection.getresponse()
        return response.status, response.read(), {k.lower(): v for k, v in response.getheaders()}
    except OSError:
        return 0, b"", {}
    finally:
        connection.close()


def service_config(settings: Settings, db: Path, **changes: Any) -> ServiceConfig:
    values: dict[str, Any] = {"llm_kind": "scripted", "torch_threads": None, **changes}
    # The scripted LLM answers as the planner too: then every turn is planned by it (code_plans off)
    scripted = values["llm_kind"] == "scripted"
    return ServiceConfig(settings=settings.with_(db_url=f"sqlite:///{db}", code_plans=not scripted), **values)


@pytest.fixture(scope="module")
def served(settings, movies_index, fashion_images, tmp_path_factory) -> Iterator[InProcess]:
    """Movies and fashion, no keys (loopback: the one local user), the scripted LLM."""
    db = tmp_path_factory.mktemp("page-db") / "recagent.sqlite3"
    service = Service(service_config(settings, db, catalogs=("movies", "fashion")), llm=ScriptedLLM())
    with InProcess(service) as server:
        yield server


@pytest.fixture(scope="module")
def spoken(tmp_path_factory) -> Path | None:
    """A spoken request, made with espeak-ng (as the speech tests make theirs); None without espeak-ng."""
    if not shutil.which("espeak-ng"):
        return None
    wav = tmp_path_factory.mktemp("page-audio") / "shark.wav"
    subprocess.run(["espeak-ng", "-s", "140", "-w", str(wav), SPOKEN], check=True)
    return wav


@pytest.fixture
def recording(spoken) -> Path:
    if spoken is None:
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng): no recording to speak")
    return spoken


@pytest.fixture(scope="module")
def browser(spoken) -> Iterator[Any]:
    """Chromium, headless; its fake microphone plays the espeak-ng recording."""
    args = ["--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream"]
    if spoken is not None:
        args.append(f"--use-file-for-fake-audio-capture={spoken}")
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=args)
        yield chromium
        chromium.close()


@pytest.fixture
def open_page(browser) -> Iterator[Callable[..., Any]]:
    """open_page(url, viewport): a fresh page with the timing trace; any dialog (alert...) fails the test."""
    contexts = []
    dialogs: list[str] = []

    def opened(url: str, viewport: dict | None = None) -> Any:
        context = browser.new_context(viewport=viewport or DESKTOP, permissions=["microphone"])
        contexts.append(context)
        page = context.new_page()
        page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        page.add_init_script(TRACE)
        page.set_default_timeout(TURN_SECONDS * 1000)
        page.goto(url + "/")
        page.wait_for_function("() => document.querySelectorAll('#catalog option').length > 0")
        return page

    yield opened
    for context in contexts:
        context.close()
    assert dialogs == [], f"a dialog opened: {dialogs}"


def send(page: Any, text: str, timeout: float = TURN_SECONDS) -> None:
    """Type and send a message; return when the turn has ended (its reply or its error shown)."""
    page.fill("#message", text)
    page.press("#message", "Enter")
    wait_turn(page, timeout)


def wait_turn(page: Any, timeout: float = TURN_SECONDS) -> None:
    """Until the turn just sent has ended: the page marks its answer done (reply, error or failure shown)."""
    page.wait_for_selector(".message.assistant[data-done]:last-child", state="attached", timeout=timeout * 1000)


def last_cards(page: Any) -> list[dict]:
    return page.eval_on_selector_all(".message.assistant:last-child .card", CARDS)


def last_trace(page: Any) -> dict:
    return page.evaluate("() => window.__turns[window.__turns.length - 1]")


def year(card: dict) -> int:
    return int(card["meta"].split(" · ")[0])


def wait_poster(page: Any) -> None:
    """Until the first card's picture has loaded from the service."""
    page.wait_for_function(
        "() => { const img = document.querySelector('.message.assistant:last-child .card img.poster');"
        " return img && img.complete && img.naturalWidth > 0; }"
    )


# ---- the tests ----------------------------------------------------------------------------------------------------


def test_the_page_and_its_files_are_served_with_a_strict_content_security_policy(served):
    for path, kind in (("/", "text/html"), ("/static/app.js", "text/javascript"), ("/static/style.css", "text/css")):
        code, body, headers = status(served.url, path)
        assert code == 200 and headers["content-type"].startswith(kind) and body
        assert headers["content-security-policy"] == CSP and "script-src 'self'" in CSP
    page = status(served.url, "/")[1].decode()
    assert "<script>" not in page and "style=" not in page and not re.search(r"<[^>]*\son[a-z]+\s*=", page)
    assert "http://" not in page and "https://" not in page  # nothing from a CDN
    script = status(served.url, "/static/app.js")[1].decode()
    assert "innerHTML" not in script and "insertAdjacentHTML" not in script and "eval(" not in script


@pytest.mark.parametrize(
    "path",
    [
        "/images/../../etc/passwd",
        "/static/../../etc/passwd",
        "/static/%2e%2e/%2e%2e/etc/passwd",
        "/static/..%2F..%2Fetc%2Fpasswd",
        "/static/%2Fetc%2Fpasswd",
        "/static/index.html/../../../../etc/passwd",
        "/items/movies/..%2F..%2Fetc%2Fpasswd/image",
        "/items/movies/%2Fetc%2Fpasswd/image",
        "/items/..%2F..%2Fetc/passwd/image",
        "/items/movies/1/image/../../../../../etc/passwd",
        "/../../etc/passwd",
    ],
)
def test_path_traversal_answers_404_and_never_a_file(served, path):
    code, body, _ = status(served.url, path)
    assert code == 404, (path, code, body[:200])
    assert b"root:" not in body and b"/bin/" not in body


def test_item_pictures_are_served_by_id(served):
    code, body, headers = status(served.url, "/items/movies/1/image")  # Toy Story's poster
    assert code == 200 and headers["content-type"] == "image/jpeg" and body[:3] == b"\xff\xd8\xff"
    assert status(served.url, "/items/movies/no-such-id/image")[0] == 404
    assert status(served.url, "/items/nowhere/1/image")[0] == 404


def test_cards_with_posters_appear_before_the_reply_text_and_feedback_is_stored(served, open_page):
    """Scripted: the shark turn shows cards (posters, titles, years, reasons) before the text; Like, Dislike and
    "I'll take it" reach the store under the local user's pseudonym; the conversation is listed and reopens."""
    page = open_page(served.url)
    served.script(*SHARK)
    send(page, "a scary movie about a shark")
    cards = last_cards(page)
    assert len(cards) == 5 and "Jaws (1975)" in [c["title"] for c in cards], cards
    assert all(c["image"] == f"/items/movies/{c['id']}/image" and c["alt"] == c["title"] for c in cards)
    assert all(re.match(r"^\d{4} · ", c["meta"]) and c["reason"] for c in cards), cards
    wait_poster(page)
    trace = last_trace(page)
    assert trace["cardSeq"] < trace["textSeq"] and trace["card"] <= trace["text"], trace
    assert page.text_content(".message.assistant:last-child .reply") == "Here are some scary ones."
    assert page.text_content(".message.user:nth-last-child(2) .text") == "a scary movie about a shark"

    service = served.service
    before = len(service.store.feedback_events("movies"))
    first, second = cards[0], cards[1]
    page.click(f'.card[data-id="{first["id"]}"] button.like')
    page.wait_for_selector(f'.card[data-id="{first["id"]}"] button.like[aria-pressed="true"]')
    page.click(f'.card[data-id="{second["id"]}"] button.dislike')
    page.wait_for_selector(f'.card[data-id="{second["id"]}"] button.dislike[aria-pressed="true"]')
    page.click(f'.card[data-id="{first["id"]}"] button.accept')
    page.wait_for_selector(f'.card[data-id="{first["id"]}"] button.accept[aria-pressed="true"]')
    events = service.store.feedback_events("movies")[before:]
    owner = service.store.user_key(LOCAL_USER)
    assert [(e["item"], e["kind"], e["signal"]) for e in events] == [
        (first["id"], "like", 1),
        (second["id"], "dislike", -1),
        (first["id"], "accept", 1),
    ]
    assert {e["user"] for e in events} == {owner} and len(owner) == 64 and LOCAL_USER not in owner

    page.click(f'.card[data-id="{first["id"]}"] button.why-button')
    why = page.text_content(f'.card[data-id="{first["id"]}"] .why')
    assert "scary shark attack" in why and "genre=Horror" in why and first["reason"] in why

    page.reload()  # the earlier conversation is listed, and reopens with its cards
    page.wait_for_selector("#history li button")
    assert page.text_content("#history li:first-child .title") == "a scary movie about a shark"
    page.click("#history li:first-child button")
    page.wait_for_selector(".message.assistant .card")
    assert [c["id"] for c in last_cards(page)] == [c["id"] for c in cards]


def test_a_photo_with_words_shows_black_items_of_its_type(served, settings, open_page, tmp_path):
    """A real red T-shirt photo, chosen in the file picker, with "like this but in black" on the fashion catalog;
    pasting and dropping a photo attach it too."""
    [red] = held_out_items(settings, 1, articleType="Tshirts", baseColour="Red")
    assert red.image
    page = open_page(served.url)
    page.select_option("#catalog", "fashion")
    photo = Path(red.image)
    data = base64.b64encode(photo.read_bytes()).decode()
    for event in ("paste", "drop"):  # both attach the photo (shown before it is sent)
        page.evaluate(
            """([kind, data]) => {
              const bytes = Uint8Array.from(atob(data), c => c.charCodeAt(0));
              const transfer = new DataTransfer();
              transfer.items.add(new File([bytes], 'shirt.jpg', { type: 'image/jpeg' }));
              const event = kind === 'paste'
                ? new ClipboardEvent('paste', { clipboardData: transfer, bubbles: true, cancelable: true })
                : new DragEvent('drop', { dataTransfer: transfer, bubbles: true, cancelable: true });
              document.body.dispatchEvent(event);
            }""",
            [event, data],
        )
        page.wait_for_selector("#attachment:not([hidden]) img[src^='blob:']")
        page.click("#attachment-remove")
        assert page.is_hidden("#attachment")

    page.set_input_files("#photo", str(photo))
    page.wait_for_selector("#attachment:not([hidden])")
    served.script(call("search_catalog", query="t-shirt in black", filters=[]), "Here are black ones.")
    send(page, "like this but in black")
    shown = page.wait_for_selector(".message.user:nth-last-child(2) img.photo")
    assert shown.evaluate("img => img.complete && img.naturalWidth > 0")
    assert page.text_content(".message.user:nth-last-child(2) .text") == "like this but in black"
    cards = last_cards(page)
    assert len(cards) == 5 and all("Black" in c["meta"].split(" · ") for c in cards), cards
    assert sum("Tshirts" in c["meta"].split(" · ") for c in cards) >= 4, cards
    assert red.id not in [c["id"] for c in cards]
    assert all(c["image"] == f"/items/fashion/{c['id']}/image" for c in cards)
    wait_poster(page)
    page.screenshot(path=str(tmp_path / "photo.png"))


def test_a_spoken_file_shows_the_transcript_then_the_cards(served, open_page, recording):
    page = open_page(served.url)
    served.script(words_of_the_user, "Shark films.")
    page.set_input_files("#audio", str(recording))
    wait_turn(page)
    heard = page.text_content(".message.user:nth-last-child(2) .text")
    assert "shark" in heard.lower(), heard
    assert page.is_visible(".message.user:nth-last-child(2) .badge")
    cards = last_cards(page)
    assert "Jaws (1975)" in [c["title"] for c in cards], cards
    trace = last_trace(page)
    assert trace["transcriptSeq"] < trace["cardSeq"] < trace["textSeq"], trace
    assert trace["transcript"] <= trace["card"] <= trace["text"], trace


def test_the_microphone_records_webm_and_the_transcript_is_shown(served, open_page, recording):
    """Record and Stop with Chromium's fake microphone, which plays the espeak-ng recording."""
    page = open_page(served.url)
    served.script(words_of_the_user, "Shark films.")
    with page.expect_request(lambda r: r.method == "POST" and r.url.endswith("/turns")) as posted:
        page.click("#record")
        page.wait_for_selector('#record[aria-pressed="true"]')
        page.wait_for_timeout(3500)  # the recording lasts about 2.5 s
        page.click("#record")
    assert posted.value.headers["content-type"].startswith("multipart/form-data")
    wait_turn(page)
    heard = page.text_content(".message.user:nth-last-child(2) .text")
    assert "shark" in heard.lower(), heard
    assert "Jaws (1975)" in [c["title"] for c in last_cards(page)]
    store = served.service.store
    [latest, *_] = store.list_conversations(store.user_key(LOCAL_USER))
    [turn] = store.turns(latest.id, latest.owner) or []
    audio = turn.request["audio"]
    assert audio["name"] in ("recording.webm", "recording.ogg") and audio["bytes"] > 1000, audio
    assert turn.reply["transcript"] == heard


def test_a_failing_llm_and_a_busy_conversation_are_said_clearly(served, open_page):
    page = open_page(served.url)
    served.script(LLMError("the LLM endpoint did not answer"))
    send(page, "a scary movie about a shark")
    notice = page.text_content("#notice")
    assert "the LLM endpoint did not answer" in notice and page.is_visible("#notice")
    assert "the LLM endpoint did not answer" in page.text_content(".message.assistant:last-child .error")
    assert last_cards(page) == []

    served.script(*SHARK)  # the page recovers: the next turn works and the message goes away
    send(page, "a scary movie about a shark")
    assert page.is_hidden("#notice") and len(last_cards(page)) == 5

    entered, opened = threading.Event(), threading.Event()

    def held(messages: list[dict]) -> dict:  # the next turn's planner waits until the test lets it go
        entered.set()
        assert opened.wait(60), "the test never let the turn go"
        return call("refine_last", filters=[])

    served.script(held, "More of them.")
    page.fill("#message", "more like these")
    page.press("#message", "Enter")
    assert entered.wait(30), "the turn never reached the LLM"
    page.click(".message.assistant:nth-last-child(3) .card button.like")  # a card of the turn before, meanwhile
    page.wait_for_selector("#notice:not([hidden])")
    assert page.text_content("#notice") == "Please wait: this conversation has a turn running; wait for its reply"
    opened.set()
    wait_turn(page)
    assert len(last_cards(page)) == 5 and page.is_hidden("#notice")


def test_a_full_service_is_said_clearly_with_when_to_try_again(served, open_page):
    """One place for turns (as --max-pending 1 gives): while one page's turn runs, another's gets 503."""
    entered, opened = threading.Event(), threading.Event()

    def held(messages: list[dict]) -> dict:
        entered.set()
        assert opened.wait(60), "the test never let the turn go"
        return call("search_catalog", query="scary shark attack", filters=[])

    config = served.service.config
    served.service.config = dataclasses.replace(config, max_pending=1)
    try:
        first, second = open_page(served.url), open_page(served.url)
        served.script(held, "Sharks.")
        first.fill("#message", "a scary movie about a shark")
        first.press("#message", "Enter")
        assert entered.wait(30), "the turn never reached the LLM"
        send(second, "something funny")
        notice = second.text_content("#notice")
        assert re.fullmatch(
            r"The service is busy or a backend is down: the service is busy \(1 turns in hand\); try again in \d+ s",
            notice,
        ), notice
        assert second.text_content(".message.assistant:last-child .error") == notice
    finally:
        opened.set()
        served.service.config = config
    wait_turn(first)
    assert len(last_cards(first)) == 5


def test_a_service_with_keys_asks_for_one_and_the_page_sends_it(served, open_page):
    """Keys swapped in for this test: without a key the page says what to do; with Ana's, her turn and her like
    are hers."""
    config = served.service.config
    served.service.config = dataclasses.replace(config, api_keys={"ana-key-0001": "ana"})
    try:
        page = open_page(served.url)
        page.wait_for_selector("#notice:not([hidden])")
        assert page.text_content("#notice") == (
            'a valid API key is needed: Authorization: Bearer KEY. Enter your key under "API key".'
        )
        page.click("#key-box summary")
        page.fill("#api-key", "ana-key-0001")
        page.click("#key-form button")
        assert page.evaluate("() => localStorage.getItem('recagent.key')") == "ana-key-0001"
        served.script(*SHARK)
        send(page, "a scary movie about a shark")
        cards = last_cards(page)
        assert "Jaws (1975)" in [c["title"] for c in cards]
        store = served.service.store
        before = len(store.feedback_events("movies"))
        page.click(f'.card[data-id="{cards[0]["id"]}"] button.like')
        page.wait_for_selector(f'.card[data-id="{cards[0]["id"]}"] button.like[aria-pressed="true"]')
        [event] = store.feedback_events("movies")[before:]
        assert event["user"] == store.user_key("ana") and event["item"] == cards[0]["id"]
        [mine] = store.list_conversations(store.user_key("ana"))
        assert mine.title == "a scary movie about a shark"
    finally:
        served.service.config = config


def test_the_phone_layout_has_no_horizontal_scroll_and_the_input_stays_reachable(served, open_page, tmp_path):
    page = open_page(served.url, PHONE)
    served.script(*SHARK)
    send(page, "a scary movie about a shark")
    wait_poster(page)
    sizes = page.evaluate(
        "() => [document.documentElement.scrollWidth, document.documentElement.clientWidth, document.body.scrollWidth]"
    )
    assert sizes[0] <= sizes[1] and sizes[2] <= sizes[1], sizes
    wide = page.evaluate(
        "() => [...document.querySelectorAll('.top, .side, .messages, .composer, .card')]"
        ".filter(e => e.scrollWidth > e.clientWidth + 1).map(e => e.className)"
    )
    assert wide == [], wide  # nothing scrolls sideways inside either
    page.screenshot(path=str(shots(tmp_path) / "page-phone.png"))
    page.evaluate("() => window.scrollTo(0, document.body.scrollHeight)")
    box = page.locator("#message").bounding_box()
    assert box and box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"] and box["width"] >= 150, box
    assert box["y"] >= 0 and box["y"] + box["height"] <= PHONE["height"], box
    page.locator("#message").focus()
    page.keyboard.type("older")
    assert page.evaluate("() => [document.activeElement.id, document.activeElement.value]") == ["message", "older"]


@pytest.fixture(scope="module")
def hostile(settings, tmp_path_factory) -> Iterator[InProcess]:
    """A catalog whose titles and tags hold markup, indexed and served with the scripted LLM."""
    folder = tmp_path_factory.mktemp("hostile")
    csv = folder / "hostile.csv"
    csv.write_text(
        "id,title,description,tags,year\n"
        "x1,<img src=x onerror=alert(1)> Shark Night,a shark horror film,<script>alert(2)</script>|sharks,2011\n"
        "x2,<script>alert(3)</script> Deep Water,sharks in deep water,<b>bold</b>|sea,1999\n"
    )
    index = CatalogIndex(str(csv), settings)
    assert not index.index(load_catalog(str(csv), settings), progress=False).interrupted
    service = Service(service_config(settings, folder / "db.sqlite3", catalogs=(str(csv),)), llm=ScriptedLLM())
    with InProcess(service) as server:
        yield server


def test_markup_from_the_catalog_and_the_model_is_shown_as_text(hostile, open_page):
    page = open_page(hostile.url)
    hostile.script(
        call("search_catalog", query="shark", filters=[]),
        "Try these <img src=y onerror=alert(4)> <script>window.__pwned = 1</script>.",
    )
    send(page, "<script>alert(5)</script> a shark film")
    titles = [c["title"] for c in last_cards(page)]
    assert sorted(titles) == ["<img src=x onerror=alert(1)> Shark Night", "<script>alert(3)</script> Deep Water"]
    reasons = " ".join(c["reason"] for c in last_cards(page))
    # user-written tags holding markup stay out of the reason line (agent/writer.py shown_tags); the plain ones show
    assert "sharks" in reasons and "sea" in reasons and "<script>" not in reasons and "<b>" not in reasons, reasons
    reply = page.text_content(".message.assistant:last-child .reply")
    assert "<script>window.__pwned = 1</script>" in reply, reply
    assert page.text_content(".message.user:nth-last-child(2) .text") == "<script>alert(5)</script> a shark film"
    # no element was made from the text: no <img src=x>, no <script> or <b> but the page's own script
    assert page.evaluate("() => document.querySelectorAll('img[src=x], img[src=y], b, .messages script').length") == 0
    assert page.evaluate("() => [...document.scripts].map(s => s.getAttribute('src'))") == ["/static/app.js"]
    assert page.evaluate("() => window.__pwned") is None
    page.wait_for_timeout(500)  # an onerror would fire by now (the open_page fixture fails on any dialog)


# ---- the real local model -----------------------------------------------------------------------------------------


@pytest.mark.slow
def test_with_the_local_model_cards_come_first_and_something_older_refines(
    settings, movies_index, open_page, tmp_path, capsys
):
    """`recagent serve` with the real in-process model: "a scary movie about a shark" shows cards with posters, Jaws
    among them, before the reply's text, with the browser's time to the first card within 0.3 s of the service's own
    items-on-screen time; "something older" shows only older ones."""
    served = start_serve(settings, "--db", f"sqlite:///{tmp_path / 'recagent.sqlite3'}", log=tmp_path / "serve.log")
    try:
        page = open_page(served.url)
        send(page, "a scary movie about a shark", timeout=300)
        first = last_cards(page)
        assert "Jaws (1975)" in [c["title"] for c in first], (first, served.tail())
        assert all(c["image"] == f"/items/movies/{c['id']}/image" for c in first)
        wait_poster(page)
        trace = last_trace(page)
        assert trace["cardSeq"] < trace["textSeq"] and trace["card"] < trace["text"], trace
        browser_seconds = (trace["card"] - trace["sent"]) / 1000
        service_seconds = float(page.get_attribute(".message.assistant:last-child", "data-items-on-screen") or "nan")
        page.screenshot(path=str(shots(tmp_path) / "page-desktop.png"))

        send(page, "something older", timeout=300)
        older = last_cards(page)
        assert older and max(year(c) for c in older) < min(year(c) for c in first), (first, older)
        trace2 = last_trace(page)
        browser2 = (trace2["card"] - trace2["sent"]) / 1000
        service2 = float(page.get_attribute(".message.assistant:last-child", "data-items-on-screen") or "nan")
    finally:
        served.stop()
    with capsys.disabled():
        print(
            f"\nbrowser time to first card: {browser_seconds:.3f} s (service items_on_screen {service_seconds:.3f} s, "
            f"+{browser_seconds - service_seconds:.3f} s); something older: {browser2:.3f} s "
            f"(service {service2:.3f} s, +{browser2 - service2:.3f} s)"
        )
    assert browser_seconds - service_seconds < 0.3 and browser2 - service2 < 0.3
