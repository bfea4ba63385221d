"""The fast tier: pure logic, no data folder, no models, no stores. `pytest -m unit` runs it in seconds."""

import pytest


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/unit/" in str(item.path):
            item.add_marker(pytest.mark.unit)
