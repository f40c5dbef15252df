"""The starter: everything a user or a backend service runs outside the worker.

- client: TransferClient, the Temporal client of ResourceTransfer workflows;
- services/: the operations every interface calls (transfers through Temporal, resources and provisioning
  on the database);
- api/: the HTTP API (FastAPI), routes per resource, each calling a service;
- cli/: the `transfer` command;
- devstack/: `transfer dev`: the Temporal dev server binary, the one-process stack, the demo seed.

May import everything of the project; nothing imports the starter but the worker's dev stack entry.
"""
