"""The kernel's ``netdev`` generic netlink family."""
