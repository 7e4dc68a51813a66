"""The ``netdevkit`` command. Each subcommand lives in its own module."""
