"""Offline by construction: switch every hub library we might import to offline mode.

Called first thing by the CLI and by the app factory. The variables are set
(not just defaulted) so a stray ``HF_HUB_OFFLINE=0`` in the environment cannot
turn a missing model into a download.
"""

from __future__ import annotations

import os

OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "DISABLE_TELEMETRY": "1",
    "DO_NOT_TRACK": "1",
    "TOKENIZERS_PARALLELISM": "false",
}


def enforce_offline() -> None:
    """Set the hub libraries' offline switches in this process and its children."""
    os.environ.update(OFFLINE_ENV)
