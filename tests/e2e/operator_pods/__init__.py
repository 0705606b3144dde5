"""Node functions the operator's end-to-end tests run in pods (mounted into the runner image)."""
