from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.iot_ingest.processes import Processes, database_url


@pytest.fixture
def processes(tmp_path: Path, transactional_db: None) -> Iterator[Processes]:
    """Set up after the database, so every process is gone before the test's tables are flushed."""
    database_url()  # nothing starts unless the processes can share the test's database
    with Processes(tmp_path) as running:
        yield running
