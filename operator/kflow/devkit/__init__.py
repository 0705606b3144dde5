"""The development kit: the local cluster, private Redis servers, the operator as a process.

The demo (`hack/demo.py`), the benchmarks (`bench/`) and the tests all use it; it imports no
pytest (the fixtures are thin wrappers in `tests/**/conftest.py`), after kopf's `KopfRunner`.

- `kflow.devkit.cluster`: the local Kubernetes cluster of `tests/cluster` (`LocalCluster`).
- `kflow.devkit.redis`: private redis-server processes and Redis Clusters.
- `kflow.devkit.operator`: kubectl (`Kube`), the operator process, `OperatorWorld`/`Scenario`.
- `kflow.devkit.manifests`: Queue, Flow and pod-template builders for the local cluster.
- `kflow.devkit.results` and `kflow.devkit.pinger`: benchmark sections and a stall meter.
- `kflow.devkit.gitops`: what kstatus (Flux) and our Argo CD health checks say of objects.

The cluster, operator and manifest parts run from a checkout of the repository (its scripts,
CRDs and examples are found relative to this file): use an editable install (`make venv`).
Nothing is re-exported here, so that `python -m kflow.devkit.pinger` starts in milliseconds.
"""
