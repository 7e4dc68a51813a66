"""Generic netlink: an I/O-free codec, typed family declarations, a thin socket."""
