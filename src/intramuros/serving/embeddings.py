"""``POST /v1/embeddings``: vectors for each input."""

from __future__ import annotations

import base64
import secrets
from functools import partial

import numpy as np

from intramuros.errors import ContextLengthExceeded, IntramurosError, InvalidRequest
from intramuros.gate import privacy
from intramuros.gate.request_texts import EmbeddingTexts
from intramuros.gate.tenants import Principal
from intramuros.platform.call import CallMeter
from intramuros.platform.offload import run_cpu
from intramuros.protocol import openai as p
from intramuros.serving import convert
from intramuros.serving.admission import subject_of
from intramuros.serving.calls import (
    metering_fields,
)
from intramuros.serving.endpoint import Endpoint


class EmbeddingService(Endpoint):
    """Serves embeddings; built once per app."""

    async def embeddings(self, req: p.EmbeddingRequest, who: Principal) -> p.EmbeddingResponse:
        """Vectors for each input, as floats or base64 of little-endian float32."""
        meter = CallMeter("/v1/embeddings", req.model)
        subject = subject_of(req.user, req.metadata)
        meter.subject = privacy.provisional_subject(subject and subject[1], self.admission.keys)
        try:
            policy = await self.admission.admit(who, meter)
            model = await self.pool.get(req.model, who.tenant)
            meter.model_found = True
            meter.weights_sha256 = model.record.sha256
            convert.require(model.record, "embeddings", "embeddings")
            inputs = convert.embedding_inputs(req, self.settings.max_embedding_inputs)
            _, seen = await self.admission.privacy(
                meter, policy, partial(EmbeddingTexts, inputs, model.engine.detokenize), subject,
                sum(len(x) if isinstance(x, str) else 4 * len(x) for x in inputs),
                "input")  # fmt: skip
            meter.keep_content = False  # vectors are not text worth keeping
            if seen is not None:
                inputs = [x if isinstance(x, str) else list(x) for x in seen]
            engine = model.engine
            if engine.counts_tokens:
                limit = engine.context_length
                counts = await run_cpu(lambda: [engine.count_tokens(item) if isinstance(item, str)
                                                else len(item) for item in inputs])  # fmt: skip
                for i, n in enumerate(counts):
                    if n > limit:
                        raise ContextLengthExceeded(model=req.model, context_length=limit,
                                                    prompt_tokens=n, max_tokens=0,
                                                    param=f"input[{i}]")  # fmt: skip
            result = await self.streams.call(model, meter, lambda: engine.embed(inputs))
        except IntramurosError as exc:
            await self.recorder.finish(meter, exc)
            raise
        dims = len(result.vectors[0]) if result.vectors else 0
        wanted = req.dimensions if req.dimensions is not None else req.output_dimension
        if wanted is not None and wanted != dims:
            refusal = InvalidRequest(
                f"Model '{req.model}' produces {dims}-dimensional vectors; it cannot "
                f"produce {wanted}.",
                param="dimensions" if req.dimensions is not None else "output_dimension",
            )
            await self.recorder.finish(meter, refusal)
            raise refusal
        meter.prompt_tokens = result.prompt_tokens
        await self.recorder.finish(meter)
        data = [
            p.EmbeddingData(index=i, embedding=(
                base64.b64encode(np.asarray(v, dtype="<f4").tobytes()).decode("ascii")
                if req.encoding_format == "base64" else v
            ))
            for i, v in enumerate(result.vectors)
        ]  # fmt: skip
        return p.EmbeddingResponse(
            id="embd-" + secrets.token_hex(12), data=data, model=req.model,
            usage=p.EmbeddingUsage(prompt_tokens=result.prompt_tokens,
                                   total_tokens=result.prompt_tokens,
                                   **metering_fields(meter)),
        )  # fmt: skip
