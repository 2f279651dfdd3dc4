"""The domain's values: users, workplaces, roles, the directory snapshot, presence
states and the identifiers (extension, workplace id, PIN, endpoint).

The leaf of the package: it imports nothing else of callrouter (import-linter checks
this), so every layer above may use it.
"""
