"""The web console of SPEC §6, served by the API process at /console/: Jinja2 templates, htmx (vendored,
pinned, with its licence under static/vendor/) and Pico CSS. It calls the services, as the API does; it
imports starter.api's dependencies and the domain, never the store or Temporal."""
