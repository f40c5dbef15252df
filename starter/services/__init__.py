"""The services every interface calls (HTTP API, CLI, console): one per part of SPEC §5.

- transfers.TransferService: initiate, the dry run, confirm / cancel / reject, order reads. Writes go
  through Temporal (starter.client), reads come from the read model.
- resources.ResourceService: resource reads with blockers, resource actions, refund quotes, auto-renewal.
- provisioning.ProvisioningService: accounts, credentials, organizations, resources (admin); tokens.

May import: domain, store, workflows (messages), starter.client. Never the API, CLI or dev stack.
"""
