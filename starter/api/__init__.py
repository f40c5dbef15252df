"""The HTTP API (SPEC §5): `app.create_app`, dependencies in `deps`, request and response shapes in
`schemas`, routes per resource in `routes/`. Every route calls a service (starter.services); none
touches the store or Temporal. May import: domain, starter.services, settings."""
