"""Run a reduced-precision graph where the runtime lacks the kernels (bf16 on onnxruntime CPU).

``emulate_reduced_precision`` rewrites a graph into float32 in which every value that the
original holds in float16/bfloat16 is rounded to that format right where it is produced:

    node with a reduced-precision output:  compute in float32, then Cast(fp16|bf16) → Cast(fp32)
    Cast(x, to=fp16|bf16):                 the same rounding pair
    Cast(x, to=fp32) of a reduced value:   Identity
    fp16/bf16 initializers:                their (exact) float32 values

Each operation therefore sees inputs in the reduced format and returns a correctly rounded
result computed with float32 accumulation, which is what GPU tensor cores and TensorRT do for
MatMul (onnxruntime CPU rounds the same way: its Cast is round-to-nearest-even). Used to
measure bf16 errors on a CPU; not a speed path.
"""

from __future__ import annotations

import onnx
from onnx import TensorProto, helper, numpy_helper

REDUCED = (TensorProto.FLOAT16, TensorProto.BFLOAT16)


def emulate_reduced_precision(model: onnx.ModelProto) -> onnx.ModelProto:
    inferred = onnx.shape_inference.infer_shapes(model)
    graph = inferred.graph
    types = {
        vi.name: vi.type.tensor_type.elem_type
        for vi in [*graph.input, *graph.output, *graph.value_info]
    }
    initializers = []
    for init in graph.initializer:
        if init.data_type in REDUCED:
            array = numpy_helper.to_array(init).astype("float32")
            init = numpy_helper.from_array(array, init.name)
        initializers.append(init)
    nodes = []
    for node in graph.node:
        if node.op_type == "Cast":
            to = next(a.i for a in node.attribute if a.name == "to")
            source = types.get(node.input[0])
            if to in REDUCED:
                nodes += _round(node.input[0], node.output[0], to, node.name)
                continue
            if to == TensorProto.FLOAT and source in REDUCED:
                nodes.append(helper.make_node("Identity", list(node.input), list(node.output)))
                continue
        reduced = {o: types[o] for o in node.output if types.get(o) in REDUCED}
        if not reduced:
            nodes.append(node)
            continue
        renamed = [f"{o}.f32" if o in reduced else o for o in node.output]
        copy = onnx.NodeProto()
        copy.CopyFrom(node)
        del copy.output[:]
        copy.output.extend(renamed)
        nodes.append(copy)
        for out, dtype in reduced.items():
            nodes += _round(f"{out}.f32", out, dtype, node.name)
    new_graph = helper.make_graph(
        nodes,
        graph.name,
        [_as_float(vi) for vi in graph.input],
        [_as_float(vi) for vi in graph.output],
        initializer=initializers,
    )
    out = helper.make_model(new_graph, opset_imports=list(model.opset_import))
    out.ir_version = model.ir_version
    return out


def _round(x: str, y: str, dtype: int, name: str) -> list[onnx.NodeProto]:
    """y = x rounded to ``dtype`` (nearest even) and held in float32."""
    mid = f"{y}.rounded"
    return [
        helper.make_node("Cast", [x], [mid], name=f"{name}/round", to=dtype),
        helper.make_node("Cast", [mid], [y], name=f"{name}/widen", to=TensorProto.FLOAT),
    ]


def _as_float(vi: onnx.ValueInfoProto) -> onnx.ValueInfoProto:
    if vi.type.tensor_type.elem_type not in REDUCED:
        return vi
    shape = [d.dim_param or d.dim_value for d in vi.type.tensor_type.shape.dim]
    return helper.make_tensor_value_info(vi.name, TensorProto.FLOAT, shape)
