#!/usr/bin/env bash
# mypy over the package as it is installed (recagent.agent, recagent.tools, ...): the folders keep the design card's
# names, so a folder of links gives mypy the `recagent` namespace to check (configuration in pyproject.toml).
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .typecheck/recagent
for d in agent tools prompts evals; do ln -sfn "../../$d" ".typecheck/recagent/$d"; done
exec "${VENV:-.venv}/bin/mypy" "$@"
