"""The ``intramuros transcribe`` command: speech files to text, srt, vtt or JSON, locally.

It loads the speech model in this process (verified like any load), writes
each result next to its input (or into ``--out``), goes on past a file it
cannot read, reports those at the end, and exits 1 if any failed.
"""

from __future__ import annotations

import asyncio
import json
import threading
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

from intramuros.errors import IntramurosError
from intramuros.platform.cli import (
    STATE_FIELDS,
    CliContext,
    actor,
    console,
    context,
    fail,
    load_options,
    settings_options,
)
from intramuros.settings import Settings, section
from intramuros.voice import protocol as p
from intramuros.voice.protocol import RESPONSE_FORMATS
from intramuros.voice.settings import VoiceSettings

# Settings the command takes besides where the state lives: its section's and the
# speech engine's.
_VOICE_FIELDS = ("voice_default_model", "voice_max_audio_seconds", "voice_block_seconds",
                 "voice_compute_type", "voice_threads", "voice_beam_size", "voice_batch_size",
                 "voice_vad")  # fmt: skip

# What a file's transcription reports as it goes: seconds done of seconds in all, then
# where the result went.
_Step = tuple[float, float] | Path


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
@settings_options(*STATE_FIELDS, *_VOICE_FIELDS)
def transcribe(files: tuple[Path, ...], model: str | None, language: str | None,
               translate: bool, fmt: str, prompt: str | None, out_dir: Path | None,
               **options: Any) -> None:  # fmt: skip
    """Transcribe audio files (wav, mp3, m4a, ogg, flac, webm) with a local speech model."""
    from intramuros.voice.languages import language_code
    from intramuros.voice.service import model_name

    try:
        settings = load_options(options)
        voice = section(settings, VoiceSettings)
        name = model_name(model or voice.voice_default_model, voice.voice_default_model)
        req = p.AudioRequest(task="translate" if translate else "transcribe", filename="",
                             data=b"", model=name, language=language_code(language),
                             prompt=prompt, response_format=typing.cast(p.ResponseFormat, fmt),
                             words=fmt == "verbose_json")  # fmt: skip
    except IntramurosError as exc:
        fail(exc)
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
    try:
        done, failed = asyncio.run(_transcribe_all(context(), settings, files, req, out_dir))
    except IntramurosError as exc:
        fail(exc)
    console.print(f"{done} transcribed, {len(failed)} failed", highlight=False)
    for path, message in failed:
        click.echo(f"error: {path}: {' '.join(message.split())}", err=True)
    if failed:
        raise SystemExit(1)


async def _transcribe_all(ctx: CliContext, settings: Settings, files: tuple[Path, ...],
                          req: p.AudioRequest,
                          out_dir: Path | None) -> tuple[int, list[tuple[Path, str]]]:  # fmt: skip
    """Every file through the model's lane in this process: (done, failed with why)."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from intramuros.voice.service import check_capability

    voice = section(settings, VoiceSettings)
    failed: list[tuple[Path, str]] = []
    done = 0
    async with ctx.open(settings) as platform:
        check_capability(await platform.model_record(req.model), req.task)
        lane = await platform.lane(req.model)
        columns = (TextColumn("{task.description}"), BarColumn(),
                   TextColumn("{task.percentage:>3.0f}%"), TimeElapsedColumn())  # fmt: skip
        with Progress(*columns, console=console, transient=False) as progress:
            overall = progress.add_task(f"{len(files)} file(s), {req.model}", total=len(files))
            for path in files:
                current = progress.add_task(path.name, total=None)

                def work(cancel: threading.Event, path: Path = path) -> Iterator[_Step]:
                    return _transcribe_one(lane.engine, path, req, voice, out_dir, cancel)

                try:
                    async for step in lane.stream(work):
                        if isinstance(step, Path):
                            done += 1
                            progress.update(current, description=f"{path.name} -> {step.name}")
                        else:
                            progress.update(current, completed=step[0], total=step[1])
                except IntramurosError as exc:
                    failed.append((path, exc.message))
                    progress.update(current, description=f"{path.name}: failed")
                except OSError as exc:
                    failed.append((path, exc.strerror or str(exc)))
                    progress.update(current, description=f"{path.name}: failed")
                progress.update(overall, advance=1)
        await asyncio.to_thread(
            platform.auditor.append, "admin", tenant=None, key_id=None, subject=None,
            data={"action": "transcribe", "actor": actor(), "model": req.model,
                  "files": len(files), "failed": len(failed)},
        )  # fmt: skip
    return done, failed


def _transcribe_one(engine: Any, path: Path, req: p.AudioRequest, settings: VoiceSettings,
                    out_dir: Path | None, cancel: threading.Event) -> Iterator[_Step]:  # fmt: skip
    """Decode, transcribe and write one file: progress as it goes, then the result's path."""
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
    yield (0.0, audio.duration)
    run = BlockRun(duration=audio.duration)
    pieces = blocks(data, audio, block_seconds=settings.voice_block_seconds, stop=cancel.is_set)
    for event in transcribe_blocks(engine, pieces, params, cancel, run):
        if isinstance(event, TranscriptionStart):
            language = event.language
        else:
            segments.append(event)
            yield (min(event.end, audio.duration), audio.duration)
    yield (audio.duration, audio.duration)
    language = run.language or language
    transcript = Transcript(req.task, language, audio.duration, tuple(segments))
    body = render(transcript, req.response_format, req.words)
    text = json.dumps(body, ensure_ascii=False, indent=2) + "\n" if isinstance(body, dict) else body
    dest = (out_dir or path.parent) / (path.stem + EXTENSIONS[req.response_format])
    if dest.resolve() == path.resolve():
        raise OSError(f"the output would overwrite the input {path}")
    dest.write_text(text, encoding="utf-8")
    yield dest
