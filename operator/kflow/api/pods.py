"""What the operator and the pods it starts both rely on: Kubernetes' limits on a pod's output."""

from __future__ import annotations

from typing import Final

# Kubernetes keeps at most this many bytes of a container's termination message. The operator
# reads a node's output from it (a larger output needs the SDK, which writes it to Redis);
# `kflow-run` cuts the error it leaves there to it.
TERMINATION_MESSAGE_LIMIT: Final = 4096

# `kflow-run`'s exit code when Redis could not be reached to start the attempt or to record its
# result (EX_TEMPFAIL): the code did not fail, the infrastructure did, so the operator retries
# the node without spending an attempt (bounded like evictions).
EXIT_INFRASTRUCTURE: Final = 75
