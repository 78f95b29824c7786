"""Which worker backend the service runs on: chosen by name when the service is assembled.

The runtime defines the :class:`~prompttuner.runtime.backend.Backend` interface and its implementations;
only the assembly knows them all, so a backend module never imports another (the Ray one imports
``ray`` only when chosen).
"""

from __future__ import annotations

from typing import Any

from prompttuner.runtime.backend import Backend

BACKENDS = ("local", "ray")


def backend_class(name: str) -> type[Backend]:
    """The backend class named ``name`` (``local``: worker processes; ``ray``: actors)."""
    if name == "local":
        from prompttuner.runtime.backend import LocalBackend

        return LocalBackend
    if name == "ray":
        from prompttuner.runtime.ray_backend import RayBackend

        return RayBackend
    raise ValueError(f"unknown backend {name!r}; known: {', '.join(BACKENDS)}")


def make_backend(name: str, **kwargs: Any) -> Backend:
    """A started-empty backend of kind ``name``; ``kwargs`` go to its constructor."""
    return backend_class(name)(**kwargs)
