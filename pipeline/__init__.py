"""A newsletter and feed publishing pipeline for a patient-news site about therapies.

The library API, for scripts and tests (the ``pipeline`` command is a thin layer over it):

    settings = load_settings(Path("."))
    with open_ledger(settings) as ledger:
        plan = plan_publish(settings, ledger)
        report = execute(plan, settings, ledger)

The names below are imported on first use (PEP 562), so that importing a light module of
the package (``pipeline.entry``, which must install a worker's signal handlers before any
slow import) does not load the whole library first.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pipeline.config import Settings, load_settings
    from pipeline.errors import (
        ConfigError,
        ContentError,
        DeliveryError,
        PipelineError,
        Problem,
        TemplateError,
    )
    from pipeline.publish import PublishPlan, PublishReport, execute, plan_publish
    from pipeline.store import open_ledger

_HOME = {
    "Settings": "pipeline.config",
    "load_settings": "pipeline.config",
    "ConfigError": "pipeline.errors",
    "ContentError": "pipeline.errors",
    "DeliveryError": "pipeline.errors",
    "PipelineError": "pipeline.errors",
    "Problem": "pipeline.errors",
    "TemplateError": "pipeline.errors",
    "PublishPlan": "pipeline.publish",
    "PublishReport": "pipeline.publish",
    "execute": "pipeline.publish",
    "open_ledger": "pipeline.store",  # delivery and workers need not load the publisher
    "plan_publish": "pipeline.publish",
}

__all__ = [
    "ConfigError",
    "ContentError",
    "DeliveryError",
    "PipelineError",
    "Problem",
    "PublishPlan",
    "PublishReport",
    "Settings",
    "TemplateError",
    "execute",
    "load_settings",
    "open_ledger",
    "plan_publish",
]


def __getattr__(name: str) -> Any:
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module 'pipeline' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value  # once found, an ordinary attribute
    return value


def __dir__() -> list[str]:
    # The lazy names too, so dir() and completion in a REPL show the whole API.
    return sorted({*globals(), *__all__})
