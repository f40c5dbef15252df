"""The request and response bodies of the HTTP API (SPEC §5), one module per resource: transfers,
resources, admin; common holds the shared field types, the bases and the error envelope.

Requests forbid unknown fields (VALIDATION_ERROR) and are at least as strict as the domain models they
become, so that bad input is refused here, as a 422, and never reaches the service half-checked.
Responses are plain shapes built from domain models; datetimes serialize as ISO 8601 UTC. Imports domain
only.
"""
