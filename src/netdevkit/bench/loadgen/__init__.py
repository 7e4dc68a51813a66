"""The load generators ``netdevkit bench`` drives servers with.

- :mod:`.mcload` - an open-loop memcached load generator without coordinated omission.
"""
