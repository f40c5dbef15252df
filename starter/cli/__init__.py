"""`transfer`, the command line: the dev stack, the production processes and the operators' commands.

May import: domain, settings, logs, starter.services, starter.client, starter.devstack, store.db.
"""

from starter.cli.commands import app

__all__ = ["app"]
