"""Typed capabilities the agent calls: catalogs, the Chroma index, models, speech, vision, ranking."""
