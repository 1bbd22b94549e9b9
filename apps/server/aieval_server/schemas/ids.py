"""Bounds shared by every id and page number the API accepts.

Ids are INTEGER columns: 32-bit on PostgreSQL ("integer out of range" above 2**31-1), 64-bit on SQLite (OverflowError
above 2**63-1). A larger number reached the driver and failed there, a bare 500. Declared once here and used by
the routers and request bodies, the bounds make such a value a 422 at the door, and show as minimum/maximum in the
OpenAPI schema."""

from __future__ import annotations

from typing import Annotated

from annotated_types import Interval
from pydantic import StringConstraints

MAX_DATABASE_ID = 2**31 - 1  # the smaller of the two
DatabaseId = Annotated[int, Interval(ge=1, le=MAX_DATABASE_ID)]

# page * page_size is the SQL OFFSET: a million pages is beyond any real list and keeps it far from overflowing.
MAX_PAGE = 1_000_000
PageNumber = Annotated[int, Interval(ge=1, le=MAX_PAGE)]

# A data import's id (services/data_packages.py) names its progress file: 32 hex digits (uuid4().hex) and nothing else,
# so that no path can be smuggled in and a malformed one is a 422 at the door.
DATA_IMPORT_ID_PATTERN = r"^[0-9a-f]{32}$"
DataImportId = Annotated[str, StringConstraints(pattern=DATA_IMPORT_ID_PATTERN)]
