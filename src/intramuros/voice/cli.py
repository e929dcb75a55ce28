"""The ``intramuros transcribe`` command: speech files to text, srt, vtt or JSON, locally.

It loads the speech model in this process (verified like any load), writes
each result next to its input (or into ``--out``), goes on past a file it
cannot read, reports those at the end, and exits 1 if any failed.
"""

from __future__ import annotations

import json
import threading
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from intramuros.voice.protocol import RESPONSE_FORMATS

# Settings of the voice section the command takes besides where the state lives.
_VOICE_FIELDS = ("voice_default_model", "voice_max_audio_seconds", "voice_block_seconds",
                 "voice_compute_type", "voice_threads", "voice_beam_size", "voice_batch_size",
                 "voice_vad")  # fmt: skip


def _settings_options(func: Callable[..., Any]) -> Callable[..., Any]:
    # Imported lazily: intramuros.cli imports this module while it is being built.
    from intramuros.cli import _STATE_FIELDS, settings_options

    return settings_options(*_STATE_FIELDS, *_VOICE_FIELDS)(func)


@click.command("transcribe")
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--model", default=None, help="Speech model (default: --voice-default-model).")
@click.option("--language", default=None, help="ISO-639-1 code of the speech; default: detect.")
@click.option("--translate", is_flag=True, help="Translate into English instead.")
@click.option("--format", "fmt", type=click.Choice(RESPONSE_FORMATS), default="text",
              show_default=True, help="Output format.")  # fmt: skip
@click.option("--prompt", default=None, help="Text to guide style or vocabulary.")
@click.option("--out", "out_dir", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="Write results here (default: next to each input).")  # fmt: skip
@_settings_options
def transcribe(files: tuple[Path, ...], model: str | None, language: str | None,
               translate: bool, fmt: str, prompt: str | None, out_dir: Path | None,
               **options: Any) -> None:  # fmt: skip
    """Transcribe audio files (wav, mp3, m4a, ogg, flac, webm) with a local speech model."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from intramuros.cli import _audit, _catalog, _fail, _settings, console
    from intramuros.errors import IntramurosError
    from intramuros.voice import protocol as p
    from intramuros.voice.languages import language_code

    try:
        settings = _settings(options)
        name = _model_name(model, settings.voice_default_model)
        req = p.AudioRequest(task="translate" if translate else "transcribe", filename="",
                             data=b"", model=name, language=language_code(language),
                             prompt=prompt, response_format=typing.cast(p.ResponseFormat, fmt),
                             words=fmt == "verbose_json")  # fmt: skip
        engine = _load(_catalog(options), name, req.task, settings)
    except IntramurosError as exc:
        _fail(exc)
        return
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
    failed: list[tuple[Path, str]] = []
    done = 0
    columns = (TextColumn("{task.description}"), BarColumn(),
               TextColumn("{task.percentage:>3.0f}%"), TimeElapsedColumn())  # fmt: skip
    with Progress(*columns, console=console, transient=False) as progress:
        overall = progress.add_task(f"{len(files)} file(s), {name}", total=len(files))
        for path in files:
            current = progress.add_task(path.name, total=None)
            try:
                dest = _transcribe_one(engine, path, req, settings, out_dir,
                                       lambda done_s, total_s, t=current: progress.update(
                                           t, completed=done_s, total=total_s))  # fmt: skip
                done += 1
                progress.update(current, description=f"{path.name} -> {dest.name}")
            except IntramurosError as exc:
                failed.append((path, exc.message))
                progress.update(current, description=f"{path.name}: failed")
            except OSError as exc:
                failed.append((path, exc.strerror or str(exc)))
                progress.update(current, description=f"{path.name}: failed")
            progress.update(overall, advance=1)
    engine.close()
    _audit(options, "transcribe", None, model=name, files=len(files), failed=len(failed))
    console.print(f"{done} transcribed, {len(failed)} failed", highlight=False)
    for path, message in failed:
        click.echo(f"error: {path}: {' '.join(message.split())}", err=True)
    if failed:
        raise SystemExit(1)


def _model_name(model: str | None, default: str) -> str:
    from intramuros.voice.service import model_name

    return model_name(model or default, default)


def _load(catalog: Any, name: str, task: Any, settings: Any) -> Any:
    """The speech model's engine, verified and loaded in this process."""
    from intramuros.engines.registry import engine_class
    from intramuros.errors import EngineUnavailable
    from intramuros.voice.service import check_capability

    record = catalog.get(name)
    check_capability(record, task)
    catalog.ensure_files(record)
    catalog.verify_record(record)
    try:
        cls = engine_class(record.engine)
    except Exception as exc:  # ConfigError: a missing plug-in
        raise EngineUnavailable(f"Model '{name}' needs engine '{record.engine}': {exc}") from None
    engine = cls(record, settings)
    engine.load()
    return engine


def _transcribe_one(engine: Any, path: Path, req: Any, settings: Any, out_dir: Path | None,
                    report: Any) -> Path:  # fmt: skip
    """Decode, transcribe and write one file; returns where the result went."""
    from intramuros.engines.base import TranscriptionStart, TranscriptSegment
    from intramuros.voice.audio import probe
    from intramuros.voice.blocks import BlockRun, blocks, transcribe_blocks
    from intramuros.voice.formats import EXTENSIONS, Transcript, render
    from intramuros.voice.service import params_of

    # Read once to check it, again block by block when long: memory stays that of a block.
    data = path.read_bytes()
    audio = probe(data, max_seconds=settings.voice_max_audio_seconds,
                  keep_seconds=settings.voice_block_seconds)  # fmt: skip
    params = params_of(req, settings.voice_vad)
    language = req.language or "en"
    segments: list[TranscriptSegment] = []
    report(0.0, audio.duration)
    run = BlockRun(duration=audio.duration)
    cancel = threading.Event()
    pieces = blocks(data, audio, block_seconds=settings.voice_block_seconds, stop=cancel.is_set)
    for event in transcribe_blocks(engine, pieces, params, cancel, run):
        if isinstance(event, TranscriptionStart):
            language = event.language
        else:
            segments.append(event)
            report(min(event.end, audio.duration), audio.duration)
    report(audio.duration, audio.duration)
    language = run.language or language
    transcript = Transcript(req.task, language, audio.duration, tuple(segments))
    body = render(transcript, req.response_format, req.words)
    text = json.dumps(body, ensure_ascii=False, indent=2) + "\n" if isinstance(body, dict) else body
    dest = (out_dir or path.parent) / (path.stem + EXTENSIONS[req.response_format])
    if dest.resolve() == path.resolve():
        raise OSError(f"the output would overwrite the input {path}")
    dest.write_text(text, encoding="utf-8")
    return dest
