"""What TensorRT's ONNX parser accepts: operator, dtype and attribute rules, as data.

Source: the operator support matrix of onnx/onnx-tensorrt ``docs/operators.md`` at the 10.1 GA
release (2024-06-17, the newest version of that file available here; TensorRT 10.3, the
version of JetPack 6.x for Jetson Orin, ships the 10.x parser, which states "opset 9 to 20"),
plus the changes that NVIDIA's release notes list for later parsers:

* 10.12: Einsum gains ellipsis, diagonal and broadcasting (NVIDIA/TensorRT CHANGELOG.md)
* 11.0:  Swish; custom ops TRT_Attention, TRT_MoE, TRT_KVCacheUpdate (release v11.0)
* 11.2:  DFT, through the cuFFT-backed FFTPlugin (release v11.2)
* 11.x:  opsets up to 24 (11.5 adds opset 25, release v11.5)

Restrictions that can be checked statically are encoded (``axes`` inputs that must be
initializers, single-output LayerNormalization, Einsum forms, Loop scan outputs); the others
(TopK's K bound, Resize modes, …) are not, so passing the check is necessary, not sufficient.
"""

from __future__ import annotations

from dataclasses import dataclass

# dtype groups of the support matrix ("FP32, FP16, BF16" and so on)
FLOATS = frozenset({"FLOAT", "FLOAT16", "BFLOAT16"})
FLOATS_INTS = FLOATS | {"INT32", "INT64"}
ANY = FLOATS_INTS | {"BOOL"}

_GROUPS: dict[frozenset[str], str] = {
    FLOATS: (
        "Acos Acosh Asin Asinh Atan Atanh AveragePool BatchNormalization Ceil Celu Clip Conv "
        "ConvTranspose Cos Cosh CumSum Dropout Einsum Elu Erf Exp Floor Gemm GlobalAveragePool "
        "GlobalLpPool GlobalMaxPool GroupNormalization GRU HardSigmoid HardSwish Hardmax "
        "ImageScaler InstanceNormalization IsInf LayerNormalization LeakyRelu Log LogSoftmax LRN "
        "LSTM LpNormalization LpPool MatMul MaxPool MeanVarianceNormalization ParametricSoftplus "
        "Pow PRelu QuantizeLinear RandomNormal RandomNormalLike RandomUniform RandomUniformLike "
        "Reciprocal Resize RNN Round ScaledTanh Scan Selu Sigmoid Sin Sinh Softmax Softplus "
        "Softsign Sqrt Tan Tanh ThresholdedRelu Upsample"
    ),
    FLOATS_INTS: (
        "Abs Add ArgMax ArgMin DepthToSpace Div Equal Greater GreaterOrEqual IsNaN Less "
        "LessOrEqual Max Min Mod Mul Neg Pad Range ReduceL1 ReduceL2 ReduceLogSum ReduceLogSumExp "
        "ReduceMax ReduceMean ReduceMin ReduceProd ReduceSum ReduceSumSquare Relu Scatter "
        "ScatterElements ScatterND Shrink Sign SpaceToDepth Sub Sum TopK Gelu Mean"
    ),
    ANY: (
        "Concat Constant ConstantOfShape Expand EyeLike Flatten Gather GatherElements GatherND "
        "Identity If Loop OneHot Reshape ReverseSequence Shape Size Slice Split Squeeze Tile "
        "Transpose Trilu Unsqueeze Where"
    ),
    ANY | {"UINT8"}: "Cast CastLike",
    frozenset(
        {"FLOAT", "FLOAT16"}
    ): "DeformConv GridSample Mish NonMaxSuppression NonZero RoiAlign",
    frozenset({"BOOL"}): "And Not Or Xor",
    frozenset({"INT8", "FLOAT8E4M3FN", "INT4"}): "DequantizeLinear",
}
OPS_10: dict[str, frozenset[str]] = {
    op: types for types, names in _GROUPS.items() for op in names.split()
}

# Listed as unsupported ("N") in the 10.x matrix.
UNSUPPORTED_10 = frozenset(
    "AffineGrid Bernoulli BitShift BitwiseAnd BitwiseNot BitwiseOr BitwiseXor BlackmanWindow "
    "Col2Im CenterCropPad Compress ConcatFromSequence ConvInteger DFT Det DynamicQuantizeLinear "
    "HammingWindow HannWindow ImageDecoder MatMulInteger MaxRoiPool MaxUnpool MelWeightMatrix "
    "Multinomial NegativeLogLikelihoodLoss Optional OptionalGetElement OptionalHasElement "
    "QLinearConv QLinearMatMul RegexFullMatch STFT SequenceAt SequenceConstruct SequenceEmpty "
    "SequenceErase SequenceInsert SequenceLength SequenceMap SoftmaxCrossEntropyLoss "
    "SplitToSequence StringConcat StringNormalizer StringSplit TfIdfVectorizer Unique".split()
)

# Inputs (by position) that must be initializers or Constant outputs ("`axes` must be an
# initializer"); ReduceX take axes as input 1 from opset 18 (ReduceSum from 13).
CONSTANT_INPUTS: dict[str, tuple[int, ...]] = {
    "Pad": (3,),
    "Slice": (3,),
    "Squeeze": (1,),
    "Unsqueeze": (1,),
    "CumSum": (1,),
    **{
        op: (1,)
        for op in (
            "ReduceL1 ReduceL2 ReduceLogSum ReduceLogSumExp ReduceMax ReduceMean ReduceMin "
            "ReduceProd ReduceSum ReduceSumSquare"
        ).split()
    },
}

# Inputs that carry indices, shapes, axes or counts (int64 there is fine for any op).
INDEX_INPUTS: dict[str, tuple[int, ...]] = {
    "Gather": (1,),
    "GatherElements": (1,),
    "GatherND": (1,),
    "Reshape": (1,),
    "Slice": (1, 2, 3, 4),
    "Pad": (1, 3),
    "Expand": (1,),
    "Tile": (1,),
    "Split": (1,),
    "TopK": (1,),
    "ConstantOfShape": (0,),
    "OneHot": (0, 1),
    "Resize": (1, 2, 3),
    "Scatter": (1,),
    "ScatterElements": (1,),
    "ScatterND": (1,),
    "Loop": (0,),
    **{op: idx for op, idx in CONSTANT_INPUTS.items() if op not in ("Pad", "Slice")},
}
# Ops whose outputs are BOOL whatever their input type; ops that take BOOL conditions.
BOOL_OUTPUTS = frozenset("Equal Greater GreaterOrEqual Less LessOrEqual IsNaN IsInf".split())
BOOL_INPUTS: dict[str, tuple[int, ...]] = {"Where": (0,), "If": (0,), "Loop": (1,)}

# dtypes TensorRT has no tensor type for at all, and those it only casts down.
NO_TRT_TYPE = frozenset(
    {"COMPLEX64", "COMPLEX128", "STRING", "INT16", "UINT16", "UINT32", "UINT64"}
)
CAST_DOWN = frozenset({"DOUBLE"})


@dataclass(frozen=True)
class ParserRules:
    """The rules of one TensorRT ONNX-parser generation."""

    version: str
    max_opset: int
    ops: dict[str, frozenset[str]]
    unsupported: frozenset[str]
    einsum_full: bool  # ellipsis, diagonal and broadcasting (10.12+)
    plugins: dict[str, str]  # op → the plugin that provides it (listed as a note)


RULES: dict[str, ParserRules] = {
    "10.3": ParserRules(
        version="10.3",
        max_opset=20,
        ops=OPS_10,
        unsupported=UNSUPPORTED_10,
        einsum_full=False,
        plugins={},
    ),
    "11": ParserRules(
        version="11",
        max_opset=24,
        ops={**OPS_10, "Swish": FLOATS, "DFT": FLOATS},
        unsupported=UNSUPPORTED_10 - {"DFT"},
        einsum_full=True,
        plugins={"DFT": "FFTPlugin (cuFFT), TensorRT ≥ 11.2"},
    ),
}
