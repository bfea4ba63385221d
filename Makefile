# The README's two commands: `make chat` (set up, index the movie catalog, start recagent) and `make test`.
.PHONY: setup chat test lint bench

setup:
	@bash scripts/setup.sh

chat: setup
	@.venv/bin/recagent index --catalog movies --quiet
	@.venv/bin/recagent chat --catalog movies

# Lint, format and type checks first (seconds), then every test tier: unit (tests/unit, `-m unit`), integration
# (the real index with the scripted LLM) and end to end (the real models, `-m slow`).
test: setup lint
	.venv/bin/python -m pytest $(PYTEST_ARGS)

lint: setup
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	bash scripts/typecheck.sh

bench: setup
	.venv/bin/recagent bench index --json docs/bench_index.json
