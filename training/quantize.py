"""An int8 copy of the ONNX export, for faster serving on CPU, and the gate it must pass.

Static quantization (ONNX Runtime): weights per channel as int8, activations as uint8 with
ranges calibrated on training photos, QDQ format; the embedding and the head stay in float.
The gate compares it with the fp32 export on the test split; training fails loudly when it
does not hold.
"""

import math
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from catsdogs.classifier import EMBEDDING, ModelOutput

# The gate: the int8 model answers like the fp32 one.
MIN_SAME_LABEL = 0.995
MAX_ACCURACY_DROP = 0.003
MAX_LOG_LOSS_RISE = 0.10  # relative
# Fewer test photos than this and a single changed label breaks MIN_SAME_LABEL (and a single
# photo moves the log loss by more than 10 %): the gate cannot judge, so no int8 copy is made.
MIN_GATE_PHOTOS = math.ceil(1 / (1 - MIN_SAME_LABEL) - 1e-9)


class QuantizationGateError(RuntimeError):
    """The int8 model does not answer closely enough like the fp32 one."""


@dataclass(frozen=True)
class GateResult:
    same_label: float  # share of test photos with the same label as fp32
    accuracy_fp32: float
    accuracy_int8: float
    log_loss_fp32: float
    log_loss_int8: float
    max_probability_change: float

    @property
    def problems(self) -> list[str]:
        found = []
        if self.same_label < MIN_SAME_LABEL:
            found.append(
                f"the same label as fp32 on {self.same_label:.2%} of the test photos "
                f"(at least {MIN_SAME_LABEL:.1%})"
            )
        if self.accuracy_fp32 - self.accuracy_int8 > MAX_ACCURACY_DROP:
            found.append(
                f"accuracy {self.accuracy_int8:.4f} against fp32's {self.accuracy_fp32:.4f} "
                f"(at most {MAX_ACCURACY_DROP} lower)"
            )
        if self.log_loss_int8 > self.log_loss_fp32 * (1 + MAX_LOG_LOSS_RISE):
            found.append(
                f"log loss {self.log_loss_int8:.4f} against fp32's {self.log_loss_fp32:.4f} "
                f"(at most {MAX_LOG_LOSS_RISE:.0%} higher)"
            )
        return found

    def metrics(self) -> dict[str, float]:
        return asdict(self)


def quantize_int8(fp32_path: Path, int8_path: Path, calibration_pixels: np.ndarray) -> Path:
    """Write the int8 model, its activation ranges calibrated on calibration_pixels."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Photos(CalibrationDataReader):
        def __init__(self):
            self.batches = iter(calibration_pixels[i : i + 16]
                                for i in range(0, len(calibration_pixels), 16))  # fmt: skip

        def get_next(self):
            batch = next(self.batches, None)
            return None if batch is None else {"image": batch}

    with tempfile.TemporaryDirectory() as scratch:
        prepared = Path(scratch) / "prepared.onnx"
        quant_pre_process(str(fp32_path), str(prepared))
        quantize_static(
            str(prepared),
            str(int8_path),
            Photos(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=head_nodes(prepared),
            # Activation ranges from a moving average of each batch's min and max, not the
            # extremes of all photos: one outlier photo no longer widens a range for all.
            extra_options={"CalibMovingAverage": True, "CalibMovingAverageConstant": 0.01},
        )
    return int8_path


def head_nodes(path: Path) -> list[str]:
    """The nodes from the backbone's pooling on: the embedding, the head and the calibrated
    softmax stay in float. They cost nothing next to the convolutions, and 8-bit steps there
    would coarsen the embedding the novelty scores use and the probabilities near 0 and 1."""
    import onnx

    nodes = list(onnx.load(str(path)).graph.node)
    produced_by = {output: index for index, node in enumerate(nodes) for output in node.output}
    start = produced_by[EMBEDDING]
    # Back through reshapes to the pooling that makes the embedding.
    while nodes[start].op_type in ("Squeeze", "Reshape", "Flatten"):
        start = produced_by[nodes[start].input[0]]
    return [node.name for node in nodes[start:]]


def check_gate(fp32: ModelOutput, int8: ModelOutput, labels: np.ndarray) -> GateResult:
    """The gate's numbers for the test split; raises QuantizationGateError when it fails."""
    from training.calibration import log_loss

    result = GateResult(
        same_label=float(np.mean(fp32.probabilities.argmax(1) == int8.probabilities.argmax(1))),
        accuracy_fp32=float(np.mean(fp32.probabilities.argmax(1) == labels)),
        accuracy_int8=float(np.mean(int8.probabilities.argmax(1) == labels)),
        log_loss_fp32=log_loss(labels, fp32.probabilities),
        log_loss_int8=log_loss(labels, int8.probabilities),
        max_probability_change=float(np.max(np.abs(fp32.probabilities - int8.probabilities))),
    )
    if result.problems:
        raise QuantizationGateError(
            "the int8 model fails its gate on the test split: " + "; ".join(result.problems)
        )
    return result
