"""The timeout daemon: ends tasks past their timeout and hands lapsed leases to new consumers."""
