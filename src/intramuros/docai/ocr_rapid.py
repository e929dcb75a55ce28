"""OCR with RapidOCR (PaddleOCR's PP-OCRv6 models in ONNX, run by ONNX Runtime).

The models are the ones inside the ``rapidocr`` wheel (3.10.0), loaded from
its ``models/`` folder by explicit path so that RapidOCR never reaches for
its download URLs; each file's sha256 is pinned below and checked before the
first load (a mismatch is refused, like any model of the catalogue).

Origin and licence: PP-OCRv6 small detection and recognition, and the
PP-OCR mobile v2.0 text-direction classifier, by Baidu's PaddleOCR project,
converted to ONNX and shipped by RapidAI/RapidOCR; Apache-2.0 (see the
wheel's ``MODEL_LICENSES.md``). The recogniser reads Chinese, English and
the Latin-script European languages (French, German, Italian, Spanish...),
not Greek: Greek pages go to Tesseract (see ``pipeline``).

RapidOCR's engine object keeps per-call state, so each worker thread gets its
own (about 100 MB), with one ONNX Runtime thread: parallelism is across pages.
:class:`RapidOcrBackend` is the ``rapidocr`` plug-in of ``intramuros.ocr`` (see
:mod:`intramuros.docai.ocr`).
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from intramuros.docai.errors import OcrUnavailable
from intramuros.docai.layout import Box
from intramuros.docai.ocr import LATIN, OcrPage, normalise_text
from intramuros.errors import ModelIntegrityError

if TYPE_CHECKING:
    from PIL import Image

MODELS: dict[str, tuple[str, str]] = {
    # role: (file inside rapidocr/models, sha256)
    "det": ("PP-OCRv6_det_small.onnx",
            "090f04abcd9d9a7498bc4ebf677e4cb9bdce1fe4197ddb7e529f1ef44e1ff94f"),
    "rec": ("PP-OCRv6_rec_small.onnx",
            "6f327246b50388f3c176ae304bd95767ea6dc0c9ae92153ef8cbe210b3c14884"),
    "cls": ("ch_ppocr_mobile_v2.0_cls_mobile.onnx",
            "e47acedf663230f8863ff1ab0e64dd2d82b838fceb5957146dab185a89d6215c"),
}
ORIGIN = "rapidocr 3.10.0 wheel (PaddleOCR PP-OCRv6 small det/rec, PP-OCR v2.0 cls; ONNX)"
LICENCE = "Apache-2.0"
LANGUAGE = "latin"  # what PageResult.language says for this engine
INSTALL_HINT = "RapidOCR is not installed: pip install 'intramuros[docai]'"

_local = threading.local()
_verified: set[str] = set()
_verify_lock = threading.Lock()


def model_dir() -> Path:
    """The folder of the models inside the installed ``rapidocr`` wheel."""
    try:
        import rapidocr
    except ImportError as exc:
        raise OcrUnavailable(INSTALL_HINT) from exc
    return Path(rapidocr.__file__).parent / "models"


def verify_models() -> dict[str, Path]:
    """The model files by role, each checked against its pinned sha256 (once per process)."""
    paths: dict[str, Path] = {}
    folder = model_dir()
    for role, (name, sha) in MODELS.items():
        path = folder / name
        with _verify_lock:
            if str(path) not in _verified:
                if not path.is_file():
                    raise OcrUnavailable(
                        f"RapidOCR's {role} model {name} is missing from the rapidocr package; "
                        "reinstall it: pip install --force-reinstall 'rapidocr==3.10.0'"
                    )
                digest = hashlib.sha256(path.read_bytes()).hexdigest()
                if digest != sha:
                    raise ModelIntegrityError(model=f"rapidocr-{role}", path=str(path),
                                              expected=sha, actual=digest)
                _verified.add(str(path))
        paths[role] = path
    return paths


def engine() -> Any:
    """This thread's RapidOCR engine, built on first use from the verified model files."""
    eng = getattr(_local, "engine", None)
    if eng is not None:
        return eng
    paths = verify_models()
    try:
        from rapidocr import RapidOCR
    except ImportError as exc:  # rapidocr without onnxruntime, or a broken install
        raise OcrUnavailable(
            f"RapidOCR cannot be loaded ({exc}): pip install 'intramuros[docai]'"
        ) from exc

    eng = RapidOCR(params={
        "Global.log_level": "error",
        "Global.use_cls": False,  # pages are upright after deskew; saves a model pass
        # A 300 dpi A4 page is shrunk to 2000 px (about 170 dpi) for detection:
        # twice as fast as full size, and the same CER on our corpus.
        "Global.max_side_len": 2000,
        "Det.model_path": str(paths["det"]),
        "Rec.model_path": str(paths["rec"]),
        "Cls.model_path": str(paths["cls"]),
        "EngineConfig.onnxruntime.intra_op_num_threads": 1,
        "EngineConfig.onnxruntime.inter_op_num_threads": 1,
    })
    _local.engine = eng
    return eng


def ocr(image: Image.Image) -> OcrPage:
    """Read ``image`` (mode L) with RapidOCR: one box per detected text line, in pixels."""
    import numpy as np

    rgb = np.asarray(image.convert("RGB"))
    result = engine()(rgb)
    boxes: list[Box] = []
    if getattr(result, "boxes", None) is not None and result.txts:
        for quad, text, score in zip(result.boxes, result.txts, result.scores, strict=False):
            xs = [float(p[0]) for p in quad]
            ys = [float(p[1]) for p in quad]
            text = normalise_text(str(text).strip())
            if not text:
                continue
            b = Box(min(xs), min(ys), max(xs), max(ys), text, conf=float(score))
            b.size = b.height
            boxes.append(b)
    confidence = sum(b.conf for b in boxes) / len(boxes) if boxes else 0.0
    return OcrPage(boxes=boxes, confidence=confidence, language=LANGUAGE)


@functools.cache
def _installed() -> bool:
    return all(importlib.util.find_spec(m) is not None for m in ("rapidocr", "onnxruntime"))


class RapidOcrBackend:
    """The ``rapidocr`` OCR backend (entry point of ``intramuros.ocr``).

    One recogniser for the Latin-script languages (it ignores ``langs``); ``auto``
    prefers it for Latin, the more accurate of our two there.
    """

    name = "rapidocr"
    scripts: Mapping[str, int] = {LATIN: 20}
    languages: Mapping[str, str] = {lang: LATIN for lang in ("eng", "fra", "deu", "ita", "spa")}
    install_hint = INSTALL_HINT

    def available(self) -> bool:
        """True when the ``rapidocr`` and ``onnxruntime`` packages are installed."""
        return _installed()

    def default_languages(self, script: str) -> list[str]:
        """None: one model reads every Latin-script language."""
        return []

    def read(self, image: Image.Image, dpi: int, langs: Sequence[str],
             checkpoint: Callable[[], None] | None) -> OcrPage:  # fmt: skip
        """Read ``image`` (``dpi`` and ``langs`` do not change what RapidOCR does)."""
        return ocr(image)
