"""The ethtool generic netlink family (rings, channels, features, RSS) and the ntuple ioctl."""
