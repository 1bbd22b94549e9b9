"""Imported once by the warm fork server so that every forked run starts with OpenCompass loaded.

Besides OpenCompass itself, what every endpoint run would otherwise load after the fork, before its first request
or on its way to the results (measured in a forked run: the modules it imported, ~0.3-0.5 s together on the 2-core
development machine): yapf (mmengine formats the config OpenCompass dumps), anyio's asyncio backend (httpcore's
async connections), the project's request pool, OpenCompass' evaluator package, and the CA bundle of the HTTPS
context every model client shares (netpolicy.default_ssl_context).
"""

import anyio._backends._asyncio  # noqa: F401
import anyio.streams.tls  # noqa: F401
import anyio.to_thread  # noqa: F401
import opencompass.cli.main  # noqa: F401
import opencompass.datasets  # noqa: F401
import opencompass.evaluator  # noqa: F401
import opencompass.models  # noqa: F401
import opencompass.summarizers  # noqa: F401
import opencompass.tasks  # noqa: F401
import torch  # noqa: F401
import transformers  # noqa: F401
import yapf.yapflib.yapf_api  # noqa: F401

import aieval_engine.oc_ext  # noqa: F401
import aieval_engine.oc_infer_task  # noqa: F401
import aieval_engine.oc_pool  # noqa: F401
from aieval_engine.netpolicy import default_ssl_context

default_ssl_context()
