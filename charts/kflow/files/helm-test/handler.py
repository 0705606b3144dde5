"""The handler of `helm test`'s Flow, run by kflow-run in the runner image.

Node `echo` returns the word it was given; its parent `check` gets that value from Redis
through kflow and fails unless it is the same word, so a Succeeded Flow proves that a result
travelled from one Job pod to the next.
"""

from typing import Any


def run(job: Any) -> dict[str, Any]:
    word = job.data["word"]
    if job.name == "echo":
        return {"echo": word}
    got = job.children_values().get("echo")
    if got != {"echo": word}:
        raise RuntimeError(f"child echo returned {got!r}, expected {{'echo': {word!r}}}")
    return {"checked": word}
