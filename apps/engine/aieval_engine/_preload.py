"""What a run's process imports before it is given its run: the warm fork server all of it once, so that every forked
run starts with OpenCompass loaded; a cold run's process (`python -m aieval_engine._child --wait`, started while the
command still prepares the job) what the run needs before its first request.

Besides OpenCompass itself, what every endpoint run would otherwise load after the fork, before its first request
or on its way to the results (measured in a forked run: the modules it imported, ~0.3-0.5 s together on the 2-core
development machine): yapf (mmengine formats the config OpenCompass dumps), anyio's asyncio backend (httpcore's
async connections), the project's request pool, OpenCompass' evaluator package, and the CA bundle of the HTTPS
context every model client shares (netpolicy.default_ssl_context).
"""

from __future__ import annotations

import contextlib
import gc
import importlib

# In the order a run imports them. torch comes with OpenCompass' model base class (opencompass.models.base), which
# every OpenCompass model class, the API ones included, derives from, and LocalRunner asks it for the GPUs.
BEFORE_FIRST_REQUEST = (
    "opencompass.cli.main",
    "torch",
    "aieval_engine.oc_ext",
    "opencompass.datasets",
    "aieval_engine.oc_pool",
    "aieval_engine.oc_infer_task",
    "yapf.yapflib.yapf_api",
    "anyio._backends._asyncio",
    "anyio.streams.tls",
    "anyio.to_thread",
)
# What the fork server loads besides: the stages after inference, and local models.
AFTER_FIRST_REQUEST = (
    "opencompass.evaluator",
    "opencompass.models",
    "opencompass.summarizers",
    "opencompass.tasks",
    "transformers",
)


@contextlib.contextmanager
def collector_paused():
    """Pause the cyclic garbage collector while OpenCompass is imported. The imports make hundreds of thousands of
    objects and next to no garbage, yet the collector, run every 700 new objects, walks them over and over: a fifth of
    the import time (measured: 6.1-6.5 s of CPU with it, 4.9 s without). Afterwards what the imports made is frozen
    (gc.freeze: module-level objects live as long as the process; later collections skip them, and a process forked
    from this one does not touch, and so copy, their pages), and the collector runs as before."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if enabled:
            gc.enable()


def preload(modules: tuple[str, ...]) -> None:
    for name in modules:
        importlib.import_module(name)
    if "aieval_engine.oc_ext" in modules:
        from aieval_engine.netpolicy import default_ssl_context

        default_ssl_context()


def preload_everything() -> None:
    with collector_paused():
        preload(BEFORE_FIRST_REQUEST + AFTER_FIRST_REQUEST)
