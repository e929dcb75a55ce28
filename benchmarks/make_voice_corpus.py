"""Build the speech corpus in benchmarks/voice_corpus/ (committed; rerun only to change it).

Sentences spoken by espeak-ng (Debian package) in English, French, German,
Spanish, Italian and Greek, resampled by sox to 16 kHz mono 16-bit WAV, plus
the same sentences with white noise mixed in (about 20 dB SNR). Ground truth
goes to ``corpus.jsonl``: one ``{"id", "lang", "noisy", "file", "text"}`` a line.

espeak-ng is a formant synthesiser: robotic voices, so word error rates are
worse than for human speech. That is fine for us: the corpus checks that the
pipeline (decoding, language handling, VAD, formats) works, and tracks the
accuracy of the bundled models over time.

    python benchmarks/make_voice_corpus.py
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

OUT = Path(__file__).resolve().parent / "voice_corpus"

# espeak-ng voice per ISO-639-1 code.
VOICES = {"en": "en-us", "fr": "fr-fr", "de": "de", "es": "es", "it": "it", "el": "el"}

SENTENCES: dict[str, list[str]] = {
    "en": [
        "The meeting starts early tomorrow morning.",
        "Please send the signed contract to our office in London.",
        "The weather was cold and windy all week.",
    ],
    "fr": [
        "La réunion commence tôt demain matin.",
        "Merci d'envoyer le contrat signé à notre bureau de Paris.",
        "Le temps était froid et venteux toute la semaine.",
    ],
    "de": [
        "Die Besprechung beginnt morgen früh.",
        "Bitte schicken Sie den unterschriebenen Vertrag an unser Büro in Berlin.",
        "Das Wetter war die ganze Woche kalt und windig.",
    ],
    "es": [
        "La reunión empieza mañana por la mañana.",
        "Por favor, envíe el contrato firmado a nuestra oficina de Madrid.",
        "El tiempo fue frío y ventoso toda la semana.",
    ],
    "it": [
        "La riunione comincia domani mattina.",
        "Per favore, mandate il contratto firmato al nostro ufficio di Roma.",
        "Il tempo è stato freddo e ventoso tutta la settimana.",
    ],
    "el": [
        "Η συνάντηση αρχίζει αύριο το πρωί.",  # noqa: RUF001 (Greek letters)
        "Παρακαλώ στείλτε το υπογεγραμμένο συμβόλαιο στο γραφείο μας στην Αθήνα.",
        "Ο καιρός ήταν κρύος όλη την εβδομάδα.",  # noqa: RUF001
    ],
}

NOISE_VOLUME = 0.02  # white noise amplitude; espeak peaks near 0.5-0.9: roughly 20 dB SNR


def run(*cmd: str) -> None:
    """Run a command; fail loudly with its stderr."""
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"{' '.join(cmd)}: {result.stderr}")


def speak(text: str, voice: str, dest: Path, tmp: Path) -> None:
    """espeak-ng -> 16 kHz mono s16 WAV, with 0.3 s of silence either side."""
    raw = tmp / "raw.wav"
    run("espeak-ng", "-v", voice, "-s", "150", "-w", str(raw), text)
    run("sox", str(raw), "-r", "16000", "-c", "1", "-b", "16", str(dest),
        "pad", "0.3", "0.3")  # fmt: skip


def add_noise(clean: Path, dest: Path, tmp: Path) -> None:
    """Mix white noise (sox, repeatable mode) into ``clean``."""
    noise = tmp / "noise.wav"
    length = subprocess.run(["soxi", "-D", str(clean)], capture_output=True,
                            text=True, check=True).stdout.strip()  # fmt: skip
    run("sox", "-R", "-n", "-r", "16000", "-c", "1", "-b", "16", str(noise),
        "synth", length, "whitenoise", "vol", str(NOISE_VOLUME))  # fmt: skip
    run("sox", "-R", "-m", str(clean), str(noise), "-b", "16", str(dest))


def main() -> None:
    for tool in ("espeak-ng", "sox", "soxi"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is needed (apt-get install espeak-ng sox)")
    OUT.mkdir(exist_ok=True)
    rows: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        for lang, sentences in SENTENCES.items():
            for i, text in enumerate(sentences, start=1):
                ident = f"{lang}-{i}"
                clean = OUT / f"{ident}.wav"
                noisy = OUT / f"{ident}-noisy.wav"
                speak(text, VOICES[lang], clean, tmp)
                add_noise(clean, noisy, tmp)
                rows.append({"id": ident, "lang": lang, "noisy": False, "file": clean.name,
                             "text": text})  # fmt: skip
                rows.append({"id": ident + "-noisy", "lang": lang, "noisy": True,
                             "file": noisy.name, "text": text})  # fmt: skip
    with (OUT / "corpus.jsonl").open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    total = sum(f.stat().st_size for f in OUT.iterdir())
    print(f"{len(rows)} recordings, {total / 1e6:.1f} MB in {OUT}")


if __name__ == "__main__":
    main()
