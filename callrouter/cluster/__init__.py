"""Active and standby routers of one Asterisk (a lease, and the election on it)."""
