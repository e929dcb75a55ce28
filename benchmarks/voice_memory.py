"""Peak memory of transcribing long audio: the server against faster-whisper called directly.

Usage::

    python benchmarks/voice_memory.py [--minutes 10,60,180] [--model whisper-base] [--record]

For each length, a silent Opus recording (ffmpeg, 6 kbit/s: a few MB for
hours) is transcribed twice, each time in a fresh process, and the growth of
that process's peak resident memory (VmHWM over VmRSS before the work) is
reported, with the time taken:

- the anchor, the direct library call: ``faster_whisper.decode_audio`` then
  ``WhisperModel.transcribe`` on the whole array, as the library's own
  documentation does it;
- the server: ``intramuros serve`` with the same model, one upload to
  ``/v1/audio/transcriptions`` (decoding checked, then transcribed in blocks).

Needs ffmpeg and the voice extra; the speech models come from
``requirements/models-voice.txt``. With ``--record`` the table is appended,
with the machine, to RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT))
from record import append_result  # noqa: E402

_DIRECT = r"""
import json, sys, time
from pathlib import Path
from faster_whisper import WhisperModel, decode_audio
from intramuros.catalog.catalog import Catalog
from intramuros.settings import load_settings
from intramuros.store.db import Database

def mem():
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0]) / 1024
    return fields

# The model as the catalogue assembles it (whisper-base comes in two packages).
settings = load_settings(data_dir=Path(sys.argv[3]))
db = Database(settings.resolved_database_url())
db.migrate()
catalog = Catalog(db, settings)
catalog.sync_bundled()
record = catalog.get(sys.argv[2])
catalog.ensure_files(record)
model = WhisperModel(str(record.weights_path().parent), device="cpu", compute_type="int8",
                     local_files_only=True)
before = mem()["VmRSS"]
start = time.perf_counter()
segments, _ = model.transcribe(decode_audio(sys.argv[1]), vad_filter=True, language="en")
text = "".join(s.text for s in segments)
print(json.dumps({"peak": mem()["VmHWM"] - before, "seconds": time.perf_counter() - start}))
"""


def _silence(folder: Path, minutes: int) -> Path:
    path = folder / f"silence-{minutes}min.ogg"
    subprocess.run(["ffmpeg", "-loglevel", "error", "-f", "lavfi", "-i",
                    "anullsrc=r=48000:cl=mono", "-t", str(minutes * 60), "-c:a", "libopus",
                    "-b:a", "6k", str(path)], check=True)  # fmt: skip
    return path


def _direct(audio: Path, model: str, folder: Path) -> tuple[float, float]:
    out = subprocess.run([sys.executable, "-c", _DIRECT, str(audio), model,
                          str(folder / "direct-data")],
                         capture_output=True, text=True, check=True)  # fmt: skip
    result = json.loads(out.stdout.strip().splitlines()[-1])
    return float(result["peak"]), float(result["seconds"])


def _server(audio: Path, model: str, folder: Path) -> tuple[float, float]:
    from tests.conftest import start_server, stop_server
    from tests.watch import rss_mib

    server = start_server(folder / f"server-{audio.stem}", "--preload-models", model,
                          "--voice-max-audio-seconds", str(4 * 3600))  # fmt: skip
    try:
        before, _ = rss_mib(server.proc.pid)
        start = time.perf_counter()
        r = httpx.post(server.base_url + "/v1/audio/transcriptions", timeout=3600,
                       files={"file": (audio.name, audio.read_bytes())},
                       data={"model": model, "language": "en"})  # fmt: skip
        seconds = time.perf_counter() - start
        r.raise_for_status()
        _, peak = rss_mib(server.proc.pid)
    finally:
        stop_server(server)
    return peak - before, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", default="10,60,180")
    parser.add_argument("--model", default="whisper-base")
    parser.add_argument("--record", action="store_true", help="append to RESULTS.md")
    args = parser.parse_args()
    lines = [f"silent Opus, model {args.model}; peak resident memory growth (MiB) and seconds",
             f"{'length':>8} {'direct call':>12} {'s':>6} {'server':>10} {'s':>6}"]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for minutes in (int(m) for m in args.minutes.split(",")):
            audio = _silence(folder, minutes)
            direct, direct_s = _direct(audio, args.model, folder)
            served, served_s = _server(audio, args.model, folder)
            lines.append(f"{minutes:6d} m {direct:12.0f} {direct_s:6.1f} {served:10.0f} "
                         f"{served_s:6.1f}")
            print(lines[-1], flush=True)
    text = "\n".join(lines) + "\n"
    print(text, end="")
    if args.record:
        append_result("benchmarks/voice_memory.py", text)


if __name__ == "__main__":
    main()
