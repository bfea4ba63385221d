# The README's two commands: `make chat` (set up, index the movie catalog, start recagent) and `make test`.
.PHONY: setup chat test bench

setup:
	@bash scripts/setup.sh

chat: setup
	@.venv/bin/recagent index --catalog movies --quiet
	@.venv/bin/recagent chat --catalog movies

test: setup
	.venv/bin/python -m pytest $(PYTEST_ARGS)

bench: setup
	.venv/bin/recagent bench index --json docs/bench_index.json
