"""Metamath: parser (`database`), verifier and proof graphs (`verify`), REFACTOR's expansion dataset (`expand`)."""

from envs.metamath.database import Database, MMError, Statement, parse  # noqa: F401
