"""`recagent ask` and `recagent chat` through their real entry points, with the scripted LLM and failing backends."""

import http.server
import json
import socket
import subprocess
import threading

import pytest
from conftest import run_cli as run


def script(tmp_path, *answers) -> str:
    path = tmp_path / "script.json"
    path.write_text(json.dumps(list(answers)))
    return str(path)


@pytest.fixture(autouse=True)
def _index(movies_index):
    return movies_index


@pytest.fixture
def env(env):
    """The scripted answers here include the planner's: the LLM plans every turn (code plans off)."""
    return {**env, "RECAGENT_CODE_PLANS": "0"}


def test_ask_json_and_conversation_file(env, tmp_path):
    conv = tmp_path / "conv.json"
    answers = [
        {"tool": "search_catalog", "args": {"query": "scary shark attack", "filters": ["genre=Horror"]}},
        "Here are some scary ones.",
    ]
    done = run(
        env,
        "ask",
        "I want a scary movie about a shark",
        "--json",
        "--conversation",
        str(conv),
        "--llm",
        "scripted",
        "--model",
        script(tmp_path, *answers),
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert {"reply", "items", "tool_calls", "timings"} <= set(out)
    assert "Jaws (1975)" in [i["title"] for i in out["items"]]
    assert all({"id", "title", "score"} <= set(i) for i in out["items"])
    assert out["tool_calls"][0]["name"] == "search_catalog" and "seconds" in out["tool_calls"][0]
    assert {"llm_prompt", "llm_generation", "retrieval", "ranking", "items_on_screen", "total"} <= set(out["timings"])
    saved = json.loads(conv.read_text())
    assert [m["role"] for m in saved["messages"]] == ["user", "assistant"]
    assert saved["shown"] == [i["id"] for i in out["items"]]


def test_backend_down_or_silent_leaves_the_conversation_file_intact(env, tmp_path):
    conv = tmp_path / "conv.json"
    answers = [{"tool": "search_catalog", "args": {"query": "pixar", "filters": []}}, "Pixar."]
    assert (
        run(
            env,
            "ask",
            "pixar films",
            "--conversation",
            str(conv),
            "--llm",
            "scripted",
            "--model",
            script(tmp_path, *answers),
        ).returncode
        == 0
    )
    before = conv.read_text()

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    down = run(
        env,
        "ask",
        "and dinosaurs?",
        "--conversation",
        str(conv),
        "--llm",
        "openai",
        "--base-url",
        f"http://127.0.0.1:{port}/v1",
        "--model",
        "qwen",
    )
    assert down.returncode == 1 and f"cannot reach the LLM endpoint http://127.0.0.1:{port}/v1" in down.stderr
    assert "Traceback" not in down.stderr and conv.read_text() == before

    silent = socket.socket()  # accepts connections, never answers
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    try:
        slow = run(
            env,
            "ask",
            "and dinosaurs?",
            "--conversation",
            str(conv),
            "--llm",
            "openai",
            "--base-url",
            f"http://127.0.0.1:{silent.getsockname()[1]}/v1",
            "--model",
            "qwen",
            "--timeout",
            "2",
        )
    finally:
        silent.close()
    assert slow.returncode == 1 and "timed out" in slow.stderr and conv.read_text() == before


def test_backend_answering_garbage_gets_a_clear_message(env, tmp_path):
    class Garbage(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(b'{"choices": [{"delta": {"content": "{\\"tool\\": ')  # broken JSON, cut off

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Garbage)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        done = run(
            env,
            "ask",
            "pixar films",
            "--llm",
            "openai",
            "--base-url",
            f"http://127.0.0.1:{server.server_port}/v1",
            "--model",
            "qwen",
            "--json",
        )
    finally:
        server.shutdown()
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "LLM endpoint" in json.loads(done.stdout)["error"]


def test_missing_api_key_is_explained(env):
    environment = {k: v for k, v in env.items() if k != "OPENAI_API_KEY"}
    done = run(environment, "ask", "pixar films", "--llm", "openai", "--model", "gpt-4o-mini")
    assert done.returncode == 1 and "set OPENAI_API_KEY" in done.stderr


def test_repl_commands_through_the_real_entry_point(env, tmp_path):
    answers = [{"tool": "search_catalog", "args": {"query": "dinosaur adventure", "filters": []}}, "Big lizards ahead."]
    saved = tmp_path / "saved.json"
    lines = [
        "a dinosaur adventure",
        "/why",
        "/like 1",
        f"/save {saved}",
        "/reset",
        f"/load {saved}",
        "/frobnicate",
        "/like 99",
        "/quit",
    ]
    done = run(env, "chat", "--llm", "scripted", "--model", script(tmp_path, *answers), stdin="\n".join(lines) + "\n")
    assert done.returncode == 0, done.stderr
    out = done.stdout
    conversation = json.loads(saved.read_text())
    first_title = (
        json.loads(saved.read_text())["messages"][1]["content"].splitlines()[1].split(". ", 1)[1].rsplit(": ", 1)[0]
    )
    assert "Jurassic Park" in out and first_title[:20] in out
    assert 'search_catalog({"query": "dinosaur adventure", "filters": []})' in out  # /why
    assert conversation["liked"] == [conversation["shown"][0]]
    assert "loaded" in out and "2 messages" in out
    assert "unknown command /frobnicate" in out and "usage: /like N" in out


@pytest.fixture(scope="module")
def recordings(tmp_path_factory):
    """Real recordings made with espeak-ng and sox, and files that are not usable audio."""
    folder = tmp_path_factory.mktemp("audio")
    subprocess.run(
        ["espeak-ng", "-s", "140", "-w", str(folder / "jaws.wav"), "I want a scary movie about a shark"], check=True
    )
    subprocess.run(["sox", "-n", "-r", "16000", "-c", "1", str(folder / "silence.wav"), "trim", "0", "3"], check=True)
    (folder / "not-audio.mp3").write_text("this is not audio")
    (folder / "empty.wav").write_bytes(b"")
    return folder


@pytest.mark.parametrize(
    "name, message",
    [
        ("not-audio.mp3", "not a readable audio file"),
        ("empty.wav", "the file is empty"),
        ("silence.wav", "I didn't catch that"),
        ("missing.wav", "no such file"),
    ],
)
def test_bad_recordings_get_a_clear_message_and_the_conversation_goes_on(env, tmp_path, recordings, name, message):
    conv = tmp_path / "conv.json"
    answers = [{"tool": "search_catalog", "args": {"query": "pixar", "filters": []}}, "Pixar."] * 2
    model = script(tmp_path, *answers)
    assert (
        run(env, "ask", "pixar films", "--conversation", str(conv), "--llm", "scripted", "--model", model).returncode
        == 0
    )
    before = conv.read_text()
    bad = run(
        env,
        "ask",
        "--audio",
        str(recordings / name),
        "--conversation",
        str(conv),
        "--llm",
        "scripted",
        "--model",
        model,
    )
    assert bad.returncode == 1 and message in bad.stderr and "Traceback" not in bad.stderr
    assert conv.read_text() == before


def test_repl_voice_command(env, tmp_path, recordings):
    answers = [{"tool": "search_catalog", "args": {"query": "scary shark", "filters": ["genre=Horror"]}}, "Scary."]
    lines = [f"/voice {recordings / 'silence.wav'}", f"/voice {recordings / 'jaws.wav'}", "/quit"]
    done = run(env, "chat", "--llm", "scripted", "--model", script(tmp_path, *answers), stdin="\n".join(lines) + "\n")
    assert done.returncode == 0, done.stderr
    assert "I didn't catch that" in done.stdout
    assert "heard: I want a scary movie about a shark" in done.stdout and "Jaws" in done.stdout
