"""Kubernetes side: kopf handlers, Job executor, worker-pool scaler."""
