"""`python -m kflow.server`: the same as `kflow server`."""

import sys

from kflow.server.main import run_server

sys.exit(run_server(sys.argv[1:]))
