"""kflow: a Kubernetes-native flow engine."""

__version__ = "0.1.0"
