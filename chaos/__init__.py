"""`make chaos`: the fault and abuse suite (issue "Fault and abuse suite"); `python -m chaos.run`."""
