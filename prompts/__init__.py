"""Prompts shipped as package data; load them with `load_prompt(name)`."""

from importlib.resources import files


def load_prompt(name: str) -> str:
    """The text of prompts/NAME.txt."""
    return files(__name__).joinpath(f"{name}.txt").read_text(encoding="utf-8")
