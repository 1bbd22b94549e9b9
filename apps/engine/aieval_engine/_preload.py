"""Imported once by the warm fork server so that every forked run starts with OpenCompass loaded."""

import opencompass.cli.main  # noqa: F401
import opencompass.datasets  # noqa: F401
import opencompass.models  # noqa: F401
import opencompass.summarizers  # noqa: F401
import opencompass.tasks  # noqa: F401
import torch  # noqa: F401
import transformers  # noqa: F401

import aieval_engine.oc_ext  # noqa: F401
