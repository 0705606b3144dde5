"""The kflow command line (also installed as kubectl-kflow)."""
