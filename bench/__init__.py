"""`make bench`: the product's rates and latencies against the floor of this machine and a no-op twin in
the product's history shape, on one Temporal dev server in one run (bench.run). Imports anything of the
project; nothing of the project imports it."""
