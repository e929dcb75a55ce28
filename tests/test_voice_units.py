"""Speech to text without a server: formats, languages, error rates, decoding limits,
CTranslate2 directories in the catalogue (added by an operator, or joined from parts),
and the `intramuros transcribe` command on a batch with a bad file in it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from intramuros.catalog import ct2
from intramuros.catalog.bundled import find_bundled
from intramuros.catalog.catalog import Catalog, sha256_file
from intramuros.engines.base import TranscriptSegment, TranscriptWord
from intramuros.errors import InvalidRequest, ModelIntegrityError
from intramuros.settings import load_settings
from intramuros.store.db import Database
from intramuros.voice.audio import probe
from intramuros.voice.errors import AudioTooLong
from intramuros.voice.formats import Transcript, render, srt, timestamp, vtt
from intramuros.voice.languages import LANGUAGES, language_code, language_name
from intramuros.voice.wer import cer, normalise, wer

CORPUS = Path(__file__).resolve().parent.parent / "benchmarks" / "voice_corpus"


def _segment(i: int, start: float, end: float, text: str) -> TranscriptSegment:
    words = tuple(TranscriptWord(start + k * 0.1, start + k * 0.1 + 0.1, " " + w, 0.9)
                  for k, w in enumerate(text.split()))  # fmt: skip
    return TranscriptSegment(id=i, seek=0, start=start, end=end, text=" " + text, tokens=(1, 2),
                             avg_logprob=-0.2, compression_ratio=1.1, no_speech_prob=0.01,
                             temperature=0.0, words=words)  # fmt: skip


def test_language_table_is_whispers() -> None:
    from faster_whisper.tokenizer import _LANGUAGE_CODES

    assert set(LANGUAGES) == set(_LANGUAGE_CODES)
    assert language_code(" FR ") == "fr" and language_code("") is None
    assert language_name("el") == "greek"
    for bad in ("english", "xx", "fr-FR"):
        with pytest.raises(InvalidRequest) as info:
            language_code(bad)
        assert info.value.param == "language"


def test_error_rates() -> None:
    assert normalise("Hello, World!  L'été") == "hello world l été"
    assert wer("the cat sat", "The cat sat.") == 0.0
    assert wer("the cat sat", "the cat") == pytest.approx(1 / 3)
    assert wer("the cat sat", "a dog stood up") == pytest.approx(4 / 3)
    assert cer("abc", "abd") == pytest.approx(1 / 3)
    assert wer("", "") == 0.0 and wer("", "x") == 1.0


def test_subtitles_and_json_shapes() -> None:
    assert timestamp(3661.5, ",") == "01:01:01,500"
    assert timestamp(0.0004, ".") == "00:00:00.000"
    segs = (_segment(0, 0.0, 1.25, "Hello there."), _segment(1, 1.5, 62.0, "General Kenobi."))
    assert srt(segs) == ("1\n00:00:00,000 --> 00:00:01,250\nHello there.\n\n"
                         "2\n00:00:01,500 --> 00:01:02,000\nGeneral Kenobi.\n")  # fmt: skip
    assert vtt(segs).startswith("WEBVTT\n\n00:00:00.000 --> 00:00:01.250\nHello there.\n\n")
    t = Transcript("transcribe", "fr", 62.5, segs)
    assert render(t, "json") == {"text": "Hello there. General Kenobi.",
                                 "usage": {"type": "duration", "seconds": 62.5}}  # fmt: skip
    assert render(t, "text") == "Hello there. General Kenobi.\n"
    full = render(t, "verbose_json", words=True)
    assert isinstance(full, dict)
    assert full["language"] == "french" and full["task"] == "transcribe"
    assert [w["word"] for w in full["words"]] == ["Hello", "there.", "General", "Kenobi."]  # type: ignore[index, union-attr]
    assert "words" not in render(t, "verbose_json")  # type: ignore[operator]
    translated = render(Transcript("translate", "de", 1.0, segs[:1]), "verbose_json")
    assert isinstance(translated, dict) and translated["language"] == "english"
    empty = render(Transcript("transcribe", "en", 3.0, ()), "json")
    assert empty == {"text": "", "usage": {"type": "duration", "seconds": 3.0}}


def _probe(data: bytes, max_seconds: float, keep_seconds: float = 600) -> Any:
    return probe(data, max_seconds=max_seconds, keep_seconds=keep_seconds)


def test_duration_limit_declared_and_decoded() -> None:
    data = (CORPUS / "en-1.wav").read_bytes()
    with pytest.raises(AudioTooLong) as info:
        _probe(data, max_seconds=1.0)  # the WAV header says ~4 s
    assert info.value.param == "file" and info.value.status == 400
    assert "voice_max_audio_seconds" in info.value.message and "1 s" in info.value.message
    # A streamed WAV (no size in its header) is stopped while decoding.
    streamed = bytearray(data)
    streamed[40:44] = (0xFFFFFFFF).to_bytes(4, "little")
    streamed[4:8] = (0xFFFFFFFF).to_bytes(4, "little")
    with pytest.raises(AudioTooLong):  # FFmpeg estimates its duration from its size
        _probe(bytes(streamed), max_seconds=1.0)
    assert _probe(bytes(streamed), max_seconds=60).duration == pytest.approx(
        _probe(data, max_seconds=60).duration, abs=0.01)  # fmt: skip


# -- CTranslate2 directories in the catalogue ------------------------------------------


def _tiny_dir(dest: Path) -> Path:
    """A copy of the bundled tiny.en directory (model.bin hard-linked where possible;
    the small files copied, so that no test can write through to the installed package)."""
    bundled = find_bundled("whisper-tiny.en")
    assert bundled is not None
    source = bundled.package_path()
    if source is None or not source.is_file():
        pytest.fail(bundled.install_hint())

    def link(src: str, dst: str) -> None:
        if Path(src).name == "model.bin":
            try:
                os.link(src, dst)
                return
            except OSError:
                pass
        shutil.copy2(src, dst)

    shutil.copytree(source.parent, dest, copy_function=link)
    return dest


def _catalog(tmp_path: Path) -> Catalog:
    settings = load_settings(data_dir=tmp_path / "data")
    db = Database(settings.resolved_database_url())
    db.migrate()
    return Catalog(db, settings)


def test_inspect_bundled_directories(tmp_path: Path) -> None:
    tiny = ct2.inspect_dir(_tiny_dir(tmp_path / "tiny"))
    assert not tiny.multilingual and tiny.vocabulary_size == 51864
    assert set(tiny.aux_files) == {"config.json", "tokenizer.json", "vocabulary.txt"}
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"model\.bin"):
        ct2.inspect_dir(tmp_path / "empty")
    config = tmp_path / "tiny" / "config.json"
    config.write_text(json.dumps({"model_type": "marian"}))
    with pytest.raises(ValueError, match="not a Whisper one"):
        ct2.inspect_dir(tmp_path / "tiny")


def test_add_a_ct2_directory_and_catch_tampering(tmp_path: Path) -> None:
    catalog = _catalog(tmp_path)
    model_dir = _tiny_dir(tmp_path / "mine")
    record = catalog.add_file(model_dir, name="my-whisper", license="MIT")
    bundled = find_bundled("whisper-tiny.en")
    assert bundled is not None
    assert (record.engine, record.format, record.capabilities) == (
        "whisper", "ctranslate2", ("transcription",))  # fmt: skip
    assert record.sha256 == bundled.sha256 and record.aux_files == bundled.aux_files
    assert record.origin.kind == "file" and record.origin.path == str(model_dir.resolve())
    catalog.verify_record(catalog.get("my-whisper"))
    with pytest.raises(InvalidRequest) as info:
        catalog.add_file(model_dir, name="my-whisper-2", capabilities=("translation",))
    assert info.value.param == "capabilities"
    with pytest.raises(InvalidRequest) as info:
        catalog.add_file(tmp_path, name="not-a-model")
    assert info.value.param == "path"
    # An altered tokenizer is refused on load, naming the file.
    tokenizer = model_dir / "tokenizer.json"
    tokenizer.write_text("{}")
    with pytest.raises(ModelIntegrityError) as err:
        catalog.verify_record(catalog.get("my-whisper"))
    assert err.value.path.endswith("tokenizer.json")


def test_whisper_base_is_joined_once_and_checked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    catalog = _catalog(tmp_path)
    assert {"whisper-base", "whisper-tiny.en"} <= set(catalog.sync_bundled())
    record = catalog.get("whisper-base")
    parts = ct2.chunk_paths()
    assert record.size_bytes == sum(p.stat().st_size for p in parts)
    path = record.weights_path()
    assert path is not None and not path.exists()  # joined on first load, not at start-up
    catalog.ensure_files(record)
    catalog.verify_record(record)
    assert sha256_file(path) == record.sha256
    verified = catalog.verify_all(["whisper-base"])
    assert [(r.name, r.ok) for r in verified] == [("whisper-base", True)]
    assert sorted(p.name for p in path.parent.iterdir()) == [
        "config.json", "model.bin", "tokenizer.json", "vocabulary.json"]  # fmt: skip
    # Joined bytes that do not hash to the pinned value are deleted, never used.
    from intramuros.catalog import bundled as bundled_module

    wrong = bundled_module.find_bundled("whisper-base")
    assert wrong is not None
    fake = type(wrong)(**{**wrong.__dict__, "sha256": "0" * 64})
    monkeypatch.setattr(bundled_module, "find_bundled", lambda name: fake)
    dest = tmp_path / "again" / "model.partial"
    dest.parent.mkdir()
    with pytest.raises(ValueError, match="expected 0000"):
        ct2.assemble(dest)
    assert not dest.exists()


# -- the command line --------------------------------------------------------------------


def _intramuros(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "intramuros.cli", *args], capture_output=True,
                          text=True, timeout=300)  # fmt: skip


@pytest.mark.slow
def test_cli_models_add_and_transcribe_a_batch_with_a_bad_file(tmp_path: Path) -> None:
    data = tmp_path / "data"
    model_dir = _tiny_dir(tmp_path / "user-model")
    added = _intramuros("models", "add", str(model_dir), "--name", "my-tiny", "--license", "MIT",
                        "--data-dir", str(data))  # fmt: skip
    assert added.returncode == 0, added.stderr
    listed = _intramuros("models", "list", "--json", "--data-dir", str(data))
    assert any(m["name"] == "my-tiny" and m["engine"] == "whisper"
               for m in json.loads(listed.stdout))  # fmt: skip
    inputs = tmp_path / "in"
    inputs.mkdir()
    shutil.copy(CORPUS / "en-2.wav", inputs / "contract.wav")
    shutil.copy(CORPUS / "en-3.wav", inputs / "weather.wav")
    (inputs / "broken.mp3").write_bytes(b"ID3 not really an mp3 at all" * 10)
    out = tmp_path / "out"
    run = _intramuros("transcribe", str(inputs / "contract.wav"), str(inputs / "broken.mp3"),
                      str(tmp_path / "missing.wav"), str(inputs / "weather.wav"),
                      "--model", "my-tiny", "--format", "srt", "--out", str(out),
                      "--data-dir", str(data))  # fmt: skip
    assert run.returncode == 1, run.stdout + run.stderr
    assert "2 transcribed, 2 failed" in run.stdout
    assert "broken.mp3" in run.stderr and "missing.wav" in run.stderr
    assert sorted(p.name for p in out.iterdir()) == ["contract.srt", "weather.srt"]
    cue = (out / "weather.srt").read_text()
    assert cue.startswith("1\n00:00:00,") and wer("The weather was cold and windy all week.",
                                                  cue.splitlines()[2]) <= 0.3  # fmt: skip
    # Next to the input by default, all good: exit 0.
    ok = _intramuros("transcribe", str(inputs / "weather.wav"), "--model", "whisper-tiny.en",
                     "--data-dir", str(data))  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    assert wer("The weather was cold and windy all week.",
               (inputs / "weather.txt").read_text()) <= 0.3  # fmt: skip
    bad = _intramuros("transcribe", str(inputs / "weather.wav"), "--model", "nope",
                      "--data-dir", str(data))  # fmt: skip
    assert bad.returncode == 1 and "nope" in bad.stderr and len(bad.stderr.splitlines()) == 1


@pytest.mark.slow
def test_batched_decoding_falls_back_when_it_repeats_itself(tmp_path: Path) -> None:
    """Batched chunks have no temperature fallback: on this clip whisper-base loops
    ("ασύ ασύ ασύ ...", gzip ratio > 2.4) unless the engine decodes it again in order."""
    import threading

    from intramuros.engines.base import TranscriptionParams
    from intramuros.engines.whisper import REPETITION_RATIO, WhisperEngine

    settings = load_settings(data_dir=tmp_path / "data", voice_batch_size=8)
    db = Database(settings.resolved_database_url())
    db.migrate()
    catalog = Catalog(db, settings)
    catalog.sync_bundled()
    record = catalog.get("whisper-base")
    catalog.ensure_files(record)
    engine = WhisperEngine(record, settings)
    engine.load()
    audio = _probe((CORPUS / "el-2.wav").read_bytes(), max_seconds=60).samples
    reference = "Παρακαλώ στείλτε το υπογεγραμμένο συμβόλαιο στο γραφείο μας στην Αθήνα."
    for timestamps in (False, True):  # batched (with the guard), then in order
        events = list(engine.transcribe(audio, TranscriptionParams(language="el",
                                                                  timestamps=timestamps),
                                        threading.Event()))  # fmt: skip
        segments = [e for e in events if isinstance(e, TranscriptSegment)]
        text = "".join(s.text for s in segments)
        assert segments and all(s.compression_ratio <= REPETITION_RATIO for s in segments)
        assert cer(reference, text) <= 0.6, text
    engine.close()
