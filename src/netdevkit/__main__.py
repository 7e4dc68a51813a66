import sys

try:
    from .cli.main import main
except KeyboardInterrupt:  # Ctrl-C while Python loads netdevkit: nothing has run yet
    sys.stderr.write("netdevkit: interrupted before the command started: nothing changed\n")
    sys.exit(130)

sys.exit(main())
