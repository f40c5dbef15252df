"""The API's routers, one module per part of SPEC §5: transfers, resources, organization, admin."""
