"""Alembic migrations of the directory schema, installed as ``callrouter.migrations``.

Run them with ``callrouter db upgrade`` (``callrouter.directory.database.upgrade``);
there is no alembic.ini, the configuration is built in code.
"""
