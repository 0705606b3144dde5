"""What runs in pods and workers: the job context, kflow-run, the worker loop."""

from kflow.sdk.handlers import Handler, HandlerError, handler, load_handlers
from kflow.sdk.job import Job, JobFlow

__all__ = ["Handler", "HandlerError", "Job", "JobFlow", "handler", "load_handlers"]
