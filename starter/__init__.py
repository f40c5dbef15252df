"""Everything that talks to Temporal from outside: the client library, the CLI and the HTTP API."""
