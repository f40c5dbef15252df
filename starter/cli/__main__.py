"""`python -m starter.cli`: the `transfer` command (how `transfer dev` starts its worker process)."""

from starter.cli.commands import app

app()
