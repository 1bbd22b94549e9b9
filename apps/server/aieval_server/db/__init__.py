"""Database engine and sessions (SQLite by default, PostgreSQL via psycopg 3)."""

from .session import Base, get_engine, make_engine, session_scope, sessionmaker_for

__all__ = ["Base", "get_engine", "make_engine", "session_scope", "sessionmaker_for"]
