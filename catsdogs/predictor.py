"""From uploaded files to answers: check and decode each file on its own thread, classify the
pixels in shared adaptive batches, and record metrics and prediction records afterwards.

Every file is checked and decoded on its own, so a bad file is refused alone and never reaches
(or fails) a batch of other clients' images.
"""

import asyncio
import functools
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

from catsdogs.answers import Answer
from catsdogs.batching import AdaptiveBatcher, OverloadedError
from catsdogs.classifier import Classifier
from catsdogs.errors import TOO_LARGE, RefusedInput
from catsdogs.metrics import ServiceMetrics
from catsdogs.preprocessing import decode_pixels
from catsdogs.records import log_prediction
from catsdogs.schema import PredictionResponse, to_response
from catsdogs.settings import ServiceSettings
from catsdogs.uploads import Upload, UploadedFile, read_upload

OVERLOAD_RETRY_AFTER_S = 1
# Uploads that decode to more pixels than this (large PNGs, TIFFs; JPEGs decode at a reduced
# scale) go one at a time to a thread of their own: they cannot hold up the ordinary photos,
# and the memory they take at once is bounded.
HEAVY_DECODE_PIXELS = 8_000_000


class Predictor:
    def __init__(self, classifier: Classifier, settings: ServiceSettings, metrics: ServiceMetrics):
        self.classifier = classifier
        self.settings = settings
        self.metrics = metrics
        self.model_tag = classifier.source
        if classifier.open_world is None:
            raise ValueError(f"model {classifier.source} has no novelty detector: retrain it")
        self.batcher = AdaptiveBatcher(
            # The model call and the novelty scores of a batch, on the batcher's thread.
            classifier.answer_pixels,
            max_batch_size=settings.max_batch_size,
            max_queue=settings.max_queue,
            on_batch=metrics.record_batch,
        )
        # Pillow releases the GIL while decoding: these threads decode uploads while the
        # model runs the previous batch.
        self.decoder = ThreadPoolExecutor(settings.threads_per_worker, "decode")
        self.heavy_decoder = ThreadPoolExecutor(1, "decode-heavy")
        metrics.set_model(
            classifier.class_names, self.model_tag, classifier.precision, classifier.metadata
        )

    async def predict(
        self, files: Sequence[UploadedFile], request_id: str = ""
    ) -> tuple[list[PredictionResponse], Callable[[], None]]:
        """One answer per file, in order, and what to record once they are sent.

        Raises RefusedInput: a file that is not a usable image (4xx), or a full queue (503).
        """
        started = time.perf_counter()
        if len(files) > self.settings.max_files:
            raise RefusedInput(
                "too_many_files",
                f"{len(files)} files; the limit is {self.settings.max_files}",
                TOO_LARGE,
            )
        loop = asyncio.get_running_loop()
        image_size, limits = self.classifier.image_size, self.settings.limits
        decoding = [
            loop.run_in_executor(
                self._decoder_for(file), read_upload, file, image_size, limits, f"file {index + 1}"
            )
            for index, file in enumerate(files)
        ]
        uploads = await _all_or_first_error(decoding)
        try:
            answers = await asyncio.gather(
                *(self.batcher.submit(upload.image.pixels) for upload in uploads)
            )
        except OverloadedError as error:
            raise RefusedInput(
                "overloaded", str(error), 503, retry_after_s=OVERLOAD_RETRY_AFTER_S
            ) from None
        latency_ms = (time.perf_counter() - started) * 1000
        responses = [to_response(answer, self.model_tag) for answer in answers]
        return responses, functools.partial(self._record, uploads, answers, latency_ms, request_id)

    def _decoder_for(self, file: UploadedFile) -> ThreadPoolExecutor:
        heavy = decode_pixels(file.data, self.classifier.image_size) > HEAVY_DECODE_PIXELS
        return self.heavy_decoder if heavy else self.decoder

    def _record(
        self,
        uploads: list[Upload],
        answers: list[Answer],
        latency_ms: float,
        request_id: str,
    ) -> None:
        for upload, answer in zip(uploads, answers, strict=True):
            self.metrics.record(upload, answer)
            log_prediction(upload, answer, self.model_tag, latency_ms, request_id)


async def _all_or_first_error(futures: list[asyncio.Future]) -> list:
    """Every result, or the first file's error once all have finished (no decode is left
    running for a request that has already been answered)."""
    results = await asyncio.gather(*futures, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return results
