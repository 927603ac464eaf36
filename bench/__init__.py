"""`make bench`: the services under closed-loop load next to their floors (rpc, db, fused)."""
