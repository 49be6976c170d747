"""A newsletter and feed publishing pipeline for a patient-news site about therapies.

The library API, for scripts and tests (the ``pipeline`` command is a thin layer over it):

    settings = load_settings(Path("."))
    with open_ledger(settings) as ledger:
        plan = plan_publish(settings, ledger)
        report = execute(plan, settings, ledger)
"""

from pipeline.config import Settings, load_settings
from pipeline.errors import (
    ConfigError,
    ContentError,
    DeliveryError,
    PipelineError,
    Problem,
    TemplateError,
)
from pipeline.publish import PublishPlan, PublishReport, execute, open_ledger, plan_publish

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
