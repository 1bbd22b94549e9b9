#!/usr/bin/env python
"""Apply (or roll back) the server's database migrations.

    python scripts/migrate_db.py                 # upgrade the configured database to the latest schema
    python scripts/migrate_db.py --url postgresql+psycopg://user@host/db
    python scripts/migrate_db.py --downgrade base

The database comes from --url or the settings (AIEVAL_DB_URL, configs/environments/$AIEVAL_ENV.yaml);
default: SQLite under the data dir.
"""

from __future__ import annotations

import argparse
import sys


def main() -> int:
    from aieval_server.config import get_settings
    from aieval_server.db.migrate import downgrade, upgrade

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", help="database URL (default: from the settings)")
    parser.add_argument("--revision", default="head", help="upgrade target (default: head)")
    parser.add_argument("--downgrade", metavar="REVISION", help="roll back to REVISION (e.g. base)")
    args = parser.parse_args()
    url = args.url or get_settings().database_url
    safe = url.split("@")[-1] if "@" in url else url
    if args.downgrade:
        downgrade(url, args.downgrade)
        print(f"downgraded {safe} to {args.downgrade}")
    else:
        upgrade(url, args.revision)
        print(f"upgraded {safe} to {args.revision}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
