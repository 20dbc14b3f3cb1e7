"""`python -m rpcgate.cli`: the `rpcgate` command."""

import sys

from rpcgate.cli.commands import main

sys.exit(main())
