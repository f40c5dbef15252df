"""Pure domain: models, rules and error codes of a resource transfer. No I/O, no clock."""
