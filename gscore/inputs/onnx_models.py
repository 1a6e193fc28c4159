"""ONNX files as models: read safely, check, and convert to a torch module the measures run on unchanged.

    proto = read_onnx_file(path, max_bytes=settings.max_upload_bytes)   # CheckpointError when refused
    check_onnx_input(proto, image_shape=(3, 32, 32))                     # SpecError when it does not fit
    model = convert_onnx(proto)                                          # nn.Module, eval mode, CPU
    model = load_onnx_model(path, max_bytes=..., image_shape=(3, 32, 32))  # the three in one

An ONNX file is protobuf (architecture and weights), so reading it runs no code. What is refused, each with
a ``CheckpointError`` (``SpecError`` for the input check):

- files over ``max_bytes`` (checked before reading), empty, truncated or not an ONNX model (protobuf
  decode error, ``onnx.checker`` failure, no graph);
- external data: a tensor (initializer, sparse initializer, ``Constant`` attribute, also inside
  subgraphs) with ``data_location == EXTERNAL`` or ``external_data`` entries. The file names the path it
  refers to (``location``); it is quoted in the message and never opened. The bytes are parsed with
  ``onnx.load_model_from_string``, which has no base directory to resolve such paths against anyway;
- operators outside ``SUPPORTED_OPS`` (deterministic tensor operators of image classifiers that the
  converter translates explicitly) or from a non-default domain: all of them are named in one message;
- graphs with other than one data input and one output, or a non-float input.

Conversion uses onnx2pytorch (``pip install 'gscore[onnx]'``), after one rewrite of the graph:
``Identity`` nodes that copy an initializer (the TorchScript exporter's de-duplication of equal tensors,
e.g. zero biases) become initializers of their own, so every layer gets its own parameters. In the
converted module each ONNX ``Relu`` node is an ``nn.ReLU`` module (called in graph order), so
``gscore.inputs.extraction`` sees one ReLU call per node, named ``Relu_<output name>``; ``Conv``/``Gemm``
weights are ``nn.Parameter`` s of ``nn.Conv2d``/``nn.Linear`` modules, so sharpness perturbs them.
Exporters fold BatchNorm into the preceding convolution in eval mode, so the parameters sharpness sees
can differ from the training module's (activations and logits are the same).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

from torch import nn

from gscore.errors import CheckpointError, SpecError

__all__ = [
    "SUPPORTED_OPS",
    "check_onnx_input",
    "convert_onnx",
    "load_onnx_model",
    "read_onnx_file",
]

SUPPORTED_OPS: frozenset[str] = frozenset(
    """
    Abs Add And ArgMax ArgMin AveragePool BatchNormalization Cast CastLike Ceil Celu Clip Concat Constant
    ConstantOfShape Conv ConvTranspose Cos DepthToSpace Div Dropout Einsum Elu Equal Erf Exp Expand Flatten
    Floor Gather GatherElements GatherND Gelu Gemm GlobalAveragePool GlobalLpPool GlobalMaxPool Greater
    GreaterOrEqual GroupNormalization HardSigmoid HardSwish Identity InstanceNormalization
    LayerNormalization LeakyRelu Less LessOrEqual LRN Log LogSoftmax LpNormalization LpPool MatMul Max
    MaxPool Mean Min Mish Mod Mul Neg Not Or Pad Pow PRelu Range Reciprocal ReduceLogSum ReduceLogSumExp
    ReduceMax ReduceMean ReduceMin ReduceProd ReduceSum ReduceSumSquare Relu Reshape Resize Round Selu
    Shape Sigmoid Sign Sin Size Slice Softmax Softplus Softsign SpaceToDepth Split Sqrt Squeeze Sub Sum
    Swish Tanh ThresholdedRelu Tile Transpose Trilu Unsqueeze Upsample Where Xor
    """.split()
)
"""Operators accepted in the main ONNX domain. Left out on purpose: control flow (If, Loop, Scan),
random, quantized, string, sequence and recurrent operators, and anything the converter would only guess."""

DEFAULT_DOMAINS = ("", "ai.onnx")
FLOAT_TYPES = ("FLOAT", "FLOAT16", "DOUBLE", "BFLOAT16")
MAX_LISTED = 8

INSTALL_HINT = "ONNX models need the optional packages: pip install 'gscore[onnx]' (onnx and onnx2pytorch)"


def _onnx():  # -> the onnx module, or a clear error
    try:
        import onnx
    except ImportError:
        raise CheckpointError(INSTALL_HINT) from None
    return onnx


def read_onnx_file(path: str | Path, *, max_bytes: int, max_tensor_bytes: int | None = None):  # -> ModelProto
    """Parse an ``.onnx`` file into a checked ``onnx.ModelProto`` without reading any other file.

    Parameters
    ----------
    path : the file; only this file is read.
    max_bytes : largest accepted size (e.g. ``Settings.max_upload_bytes``); checked before reading.
    max_tensor_bytes : cap on the bytes all its tensors declare (shape x itemsize), checked before any is
        decoded (None: no cap; the service passes ``GSCORE_MAX_CHECKPOINT_BYTES``); each tensor must hold
        the data it declares, whatever the cap.

    Returns
    -------
    onnx.ModelProto with all tensors stored inside it and only ``SUPPORTED_OPS`` in its graph.

    Raises CheckpointError for everything listed in the module docstring.
    """
    onnx = _onnx()
    from google.protobuf.message import DecodeError

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"ONNX file not found: {path.name}")
    size = path.stat().st_size
    if size == 0:
        raise CheckpointError("ONNX file is empty (0 bytes)")
    if size > max_bytes:
        raise CheckpointError(f"ONNX file is {size} bytes, over the limit of {max_bytes} bytes")
    data = path.read_bytes()
    try:
        proto = onnx.load_model_from_string(data)
    except (DecodeError, RuntimeError, ValueError) as exc:
        raise CheckpointError(
            f"not a valid ONNX file (truncated or corrupt protobuf?): {type(exc).__name__}: {exc}"[:300]
        ) from None
    if not proto.HasField("graph") or not proto.graph.node:
        raise CheckpointError("not a valid ONNX file: it holds no graph (truncated, or not an ONNX model?)")
    _refuse_external_data(proto)
    _refuse_inflating_tensors(proto, max_tensor_bytes)
    try:
        onnx.checker.check_model(proto)
    except Exception as exc:  # onnx.checker.ValidationError and C++ errors
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"invalid ONNX model (onnx.checker): {first_line[:300]}") from None
    _refuse_unsupported_ops(proto)
    _graph_io(proto)  # one float input, one output
    return proto


def check_onnx_input(model_or_proto, image_shape: Sequence[int]) -> None:
    """Check that the graph's input takes batches of images of shape ``image_shape``.

    Parameters
    ----------
    model_or_proto : an ``onnx.ModelProto``, or a module returned by ``convert_onnx`` (which keeps it).
    image_shape : ``(C, H, W)`` (or any per-sample shape) of the dataset's images.

    The input must have rank ``1 + len(image_shape)``; every dimension after the batch dimension that the
    graph fixes must equal the image's (symbolic dimensions accept any size). Raises SpecError naming both
    shapes, with ``field="model"``.
    """
    proto = getattr(model_or_proto, "onnx_model", model_or_proto)
    value_info, _ = _graph_io(proto)
    dims = [
        dim.dim_value if dim.HasField("dim_value") else (dim.dim_param or "?")
        for dim in value_info.type.tensor_type.shape.dim
    ]
    image_shape = [int(v) for v in image_shape]
    shown = "[" + ", ".join(str(d) for d in dims) + "]"
    expected = f"[batch, {', '.join(map(str, image_shape))}]"
    if len(dims) != 1 + len(image_shape):
        raise SpecError(
            f"the ONNX model's input {value_info.name!r} has shape {shown} but the dataset's images need "
            f"{expected}; export the model with an input of that shape",
            field="model",
        )
    bad = [
        (axis, want, got)
        for axis, (got, want) in enumerate(zip(dims[1:], image_shape, strict=True), start=1)
        if isinstance(got, int) and got != want
    ]
    if bad:
        axes = ", ".join(f"dim {axis} is {got} (images: {want})" for axis, want, got in bad)
        raise SpecError(
            f"the ONNX model's input {value_info.name!r} has shape {shown} but the dataset's images need "
            f"{expected}: {axes}; score it on the dataset it was trained for",
            field="model",
        )


def convert_onnx(proto) -> nn.Module:
    """A torch module computing the ONNX graph (eval mode, float32, CPU).

    Parameters
    ----------
    proto : an ``onnx.ModelProto`` returned by ``read_onnx_file``.

    Returns
    -------
    nn.Module mapping ``[B, *image_shape]`` float32 to the graph's single output (logits ``[B, K]``); it
    keeps the proto as ``.onnx_model``. Raises CheckpointError when the converter cannot translate a node.
    """
    try:
        from onnx2pytorch import ConvertModel
    except ImportError:
        raise CheckpointError(INSTALL_HINT) from None
    proto = _materialize_initializer_copies(proto)
    try:
        with warnings.catch_warnings():
            # the converter warns when it would only guess an operator: refuse instead
            warnings.filterwarnings("error", message="No explicit conversion", category=RuntimeWarning)
            warnings.filterwarnings("ignore", category=UserWarning)
            model = ConvertModel(proto)
    except (NotImplementedError, RuntimeWarning) as exc:
        raise CheckpointError(f"cannot convert this ONNX model: {exc}"[:400]) from None
    except (KeyError, ValueError, TypeError, RuntimeError) as exc:
        raise CheckpointError(f"cannot convert this ONNX model ({type(exc).__name__}: {exc})"[:400]) from None
    return model.float().eval()


def load_onnx_model(
    path: str | Path, *, max_bytes: int, image_shape: Sequence[int] | None = None
) -> nn.Module:
    """``read_onnx_file`` + ``check_onnx_input`` (when ``image_shape`` is given) + ``convert_onnx``."""
    proto = read_onnx_file(path, max_bytes=max_bytes)
    if image_shape is not None:
        check_onnx_input(proto, image_shape)
    return convert_onnx(proto)


# -- checks ------------------------------------------------------------------------------------------


def _graphs(graph) -> Iterator:  # the graph and every subgraph (If/Loop bodies), depth first
    yield graph
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("g"):
                yield from _graphs(attr.g)
            for sub in attr.graphs:
                yield from _graphs(sub)


def _tensors(proto) -> Iterator[tuple[str, object]]:
    """(where, TensorProto) for every tensor stored in the model."""
    for graph in _graphs(proto.graph):
        for tensor in graph.initializer:
            yield f"initializer {tensor.name!r}", tensor
        for sparse in graph.sparse_initializer:
            yield f"sparse initializer {sparse.values.name!r}", sparse.values
            yield f"sparse initializer {sparse.indices.name!r}", sparse.indices
        for node in graph.node:
            for attr in node.attribute:
                if attr.HasField("t"):
                    yield f"attribute {attr.name!r} of node {node.name or node.op_type!r}", attr.t
                for tensor in attr.tensors:
                    yield f"attribute {attr.name!r} of node {node.name or node.op_type!r}", tensor
                if attr.HasField("sparse_tensor"):
                    yield (
                        f"attribute {attr.name!r} of node {node.name or node.op_type!r}",
                        attr.sparse_tensor.values,
                    )


def _refuse_external_data(proto) -> None:
    onnx = _onnx()
    for where, tensor in _tensors(proto):
        if tensor.data_location == onnx.TensorProto.EXTERNAL or len(tensor.external_data):
            entries = {entry.key: entry.value for entry in tensor.external_data}
            location = entries.get("location", "<no location given>")
            raise CheckpointError(
                f"the ONNX file stores {where} as external data in {location!r}; files named inside an "
                "upload are never read. Save the model with all tensors inside the one file: "
                "torch.onnx.export(..., external_data=False), or onnx.save_model(model, path, "
                "save_as_external_data=False) (models over 2 GB cannot be scored as ONNX)"
            )


def _refuse_inflating_tensors(proto, max_tensor_bytes: int | None) -> None:
    """CheckpointTooLarge when the tensors declare more than ``max_tensor_bytes`` (if set) in all; CheckpointError
    for a tensor whose stored data is not what its shape declares (decoding it would allocate the shape)."""
    import math

    from gscore.inputs.archives import CheckpointTooLarge

    onnx = _onnx()
    total, largest = 0, ("", 0)
    for where, tensor in _tensors(proto):
        count = math.prod(tensor.dims)
        try:
            itemsize = onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize
        except (KeyError, TypeError, ValueError):
            itemsize = 1
        declared = count * itemsize
        total += declared
        largest = max(largest, (where, declared), key=lambda item: item[1])
        if tensor.HasField("raw_data"):
            holds, expected = len(tensor.raw_data), declared
        else:  # one entry per element in the typed field (two for complex numbers)
            holds, expected = _typed_count(tensor), count
        if holds < expected:
            raise CheckpointError(
                f"the ONNX file's {where} declares shape {list(tensor.dims)} ({declared} bytes) but "
                f"stores less data ({holds} {'bytes' if tensor.HasField('raw_data') else 'elements'}); refused"
            )
    if max_tensor_bytes is not None and total > max_tensor_bytes:
        raise CheckpointTooLarge(
            f"the ONNX model's tensors declare {total} bytes in all, over the limit of {max_tensor_bytes} "
            f"(GSCORE_MAX_CHECKPOINT_BYTES); the largest is {largest[0]} with {largest[1]} bytes"
        )


def _typed_count(tensor) -> int:
    """Elements stored in a tensor's typed fields (``float_data``, ``int32_data``, ...)."""
    return max(
        len(tensor.float_data),
        len(tensor.int32_data),
        len(tensor.int64_data),
        len(tensor.double_data),
        len(tensor.uint64_data),
        len(tensor.string_data),
    )


def _refuse_unsupported_ops(proto) -> None:
    unsupported: dict[str, int] = {}
    for graph in _graphs(proto.graph):
        for node in graph.node:
            if node.domain not in DEFAULT_DOMAINS:
                name = f"{node.domain}::{node.op_type}"
            elif node.op_type not in SUPPORTED_OPS:
                name = node.op_type
            else:
                continue
            unsupported[name] = unsupported.get(name, 0) + 1
    if unsupported:
        names = sorted(unsupported)
        listed = ", ".join(f"{name} (x{unsupported[name]})" for name in names[:MAX_LISTED])
        more = f" and {len(names) - MAX_LISTED} more" if len(names) > MAX_LISTED else ""
        raise CheckpointError(
            f"the ONNX graph uses operator(s) that cannot be converted: {listed}{more}. Supported are the "
            "standard-domain tensor operators of image classifiers (gscore.inputs.onnx_models.SUPPORTED_OPS); "
            "control flow, random, quantized and custom-domain operators are not"
        )


def _graph_io(proto):  # -> (the data input's ValueInfoProto, the output's)
    onnx = _onnx()
    graph = proto.graph
    initializers = {tensor.name for tensor in graph.initializer}
    inputs = [value for value in graph.input if value.name not in initializers]
    if len(inputs) != 1 or len(graph.output) != 1:
        raise CheckpointError(
            f"the ONNX graph has {len(inputs)} data input(s) and {len(graph.output)} output(s); a classifier "
            "needs exactly one image input and one logits output"
        )
    element_type = inputs[0].type.tensor_type.elem_type
    type_name = onnx.TensorProto.DataType.Name(element_type) if element_type else "UNDEFINED"
    if type_name not in FLOAT_TYPES:
        raise CheckpointError(
            f"the ONNX model's input {inputs[0].name!r} has element type {type_name}; it must take float "
            "images (export it from a model that takes float32 input)"
        )
    return inputs[0], graph.output[0]


# -- graph rewrite -----------------------------------------------------------------------------------


def _materialize_initializer_copies(proto):
    """A copy of ``proto`` where each ``Identity(initializer)`` node is replaced by an initializer of
    the same value under the node's output name (top-level graph only)."""
    onnx = _onnx()
    graph = proto.graph
    initializers = {tensor.name: tensor for tensor in graph.initializer}
    copies = [node for node in graph.node if node.op_type == "Identity" and node.input[0] in initializers]
    if not copies:
        return proto
    rewritten = onnx.ModelProto()
    rewritten.CopyFrom(proto)
    kept = [
        node
        for node in rewritten.graph.node
        if not (node.op_type == "Identity" and node.input[0] in initializers)
    ]
    del rewritten.graph.node[:]
    rewritten.graph.node.extend(kept)
    for node in copies:
        tensor = onnx.TensorProto()
        tensor.CopyFrom(initializers[node.input[0]])
        tensor.name = node.output[0]
        rewritten.graph.initializer.append(tensor)
    return rewritten
