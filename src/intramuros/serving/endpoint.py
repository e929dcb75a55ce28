"""What every endpoint's service (chat, completion, embeddings) is built from, once per app."""

from __future__ import annotations

from dataclasses import dataclass

from intramuros.serving.admission import Admission
from intramuros.serving.pool import ModelPool
from intramuros.serving.recorder import CallRecorder
from intramuros.serving.streams import Streams
from intramuros.settings import Settings


@dataclass
class Endpoint:
    """The parts an endpoint's service uses: it subclasses this and adds its route's method."""

    settings: Settings
    pool: ModelPool
    admission: Admission
    streams: Streams
    recorder: CallRecorder
