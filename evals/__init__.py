"""Evaluation runners and benchmarks; scripted dialogues live beside them as data."""
