"""Many nodes, one PostgreSQL: claims, leases, rescue, fencing and cluster-wide commands."""
