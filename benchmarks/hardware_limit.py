"""How far from this machine's limit a model runs: the work in an exported graph and the GEMM peak.

- `graph_flops`: floating-point operations of one batch-1 call of an ONNX graph, counted over its
  MatMul, Gemm and Conv nodes (2 x multiply-adds) from shapes found by ONNX shape inference, with
  the batch fixed to 1; tensors whose shape inference cannot tell (computed Reshape targets) are
  measured by running the graph once with them as extra outputs. Everything else in the graph
  (softmax, layer norms, gathers) is left out: it is memory traffic, not arithmetic peak.
- `gemm_peak`: the GEMM throughput ONNX Runtime reaches on this machine with the same session
  options soundsift serves with: a float32 MatMul, and int8 as MatMulInteger (uint8 x int8, what
  dynamic int8 runs) and QLinearMatMul (what static QDQ fuses to), each on a constant weight.

    python benchmarks/hardware_limit.py --graph /tmp/soundsift-onnx-fp32/audio.onnx
    python benchmarks/hardware_limit.py --no-peak --time DYNAMIC/audio.onnx STATIC/audio.onnx
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np

COUNTED = ("MatMul", "Gemm", "Conv")
TURN = 3  # timed calls per graph in each turn of --time


def graph_flops(path: str | Path, feeds: dict[str, np.ndarray] | None = None) -> dict[str, Any]:
    """FLOPs (2 x multiply-adds) of MatMul/Gemm/Conv in one batch-1 call of a clip no longer than
    the window, by operator type: the fused checkpoints' fusion branch, which such a clip skips (an
    If in the exported graph), is not counted."""
    import onnx

    model = onnx.load(str(path))
    for graph_input in model.graph.input:
        dims = graph_input.type.tensor_type.shape.dim
        if dims and not dims[0].HasField("dim_value"):
            dims[0].dim_value = 1
    inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    shapes = {init.name: list(init.dims) for init in inferred.graph.initializer}
    for value in [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]:
        dims = value.type.tensor_type.shape.dim
        if dims and all(dim.HasField("dim_value") for dim in dims):
            shapes[value.name] = [dim.dim_value for dim in dims]
    nodes = [node for node in inferred.graph.node if node.op_type in COUNTED]
    needed = {name for node in nodes for name in [*node.input[:2], node.output[0]] if name}
    missing = sorted(needed - set(shapes))
    if missing:
        shapes.update(_measured_shapes(model, missing, feeds))
    by_type: dict[str, float] = {}
    for node in nodes:
        by_type[node.op_type] = by_type.get(node.op_type, 0.0) + _node_flops(node, shapes)
    return {
        "total": sum(by_type.values()),
        "by_type": by_type,
        "nodes": len(nodes),
        "shapes_from_inference": len(needed) - len(missing),
        "shapes_measured": len(missing),
    }


def _node_flops(node: Any, shapes: dict[str, list[int]]) -> float:
    attributes = {attribute.name: attribute for attribute in node.attribute}
    if node.op_type == "Conv":
        weight, output = shapes[node.input[1]], shapes[node.output[0]]
        return 2.0 * math.prod(output) * math.prod(weight[1:])
    a, b = shapes[node.input[0]], shapes[node.input[1]]
    if node.op_type == "Gemm":
        trans_a = bool(attributes["transA"].i) if "transA" in attributes else False
        trans_b = bool(attributes["transB"].i) if "transB" in attributes else False
        m, k = (a[1], a[0]) if trans_a else (a[0], a[1])
        n = b[0] if trans_b else b[1]
        return 2.0 * m * k * n
    output = shapes[node.output[0]]  # MatMul: batch dims broadcast, (..., M, K) x (..., K, N)
    k = a[-1] if len(a) > 1 else a[0]
    return 2.0 * math.prod(output) * k


def _measured_shapes(model: Any, names: list[str], feeds: dict[str, np.ndarray] | None) -> dict[str, list[int]]:
    import onnx
    import onnxruntime

    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    existing = {output.name for output in copy.graph.output}
    for name in names:
        if name not in existing:
            copy.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
    session = onnxruntime.InferenceSession(copy.SerializeToString(), providers=["CPUExecutionProvider"])
    outputs = [output.name for output in session.get_outputs()]
    values = session.run(None, feeds or _dummy_feeds(session))
    found = dict(zip(outputs, values))
    return {name: list(found[name].shape) for name in names}


def _dummy_feeds(session: Any) -> dict[str, np.ndarray]:
    types = {"tensor(float)": np.float32, "tensor(bool)": np.bool_, "tensor(int64)": np.int64}
    feeds = {}
    for graph_input in session.get_inputs():
        shape = [dim if isinstance(dim, int) else 1 for dim in graph_input.shape]
        feeds[graph_input.name] = np.zeros(shape, dtype=types[graph_input.type])
    return feeds


def gemm_peak(threads: int | None = None, size: int = 1024, seconds: float = 1.0) -> dict[str, float]:
    """GFLOP/s of a size x size x size product: float32 MatMul, MatMulInteger and QLinearMatMul."""
    import onnx
    import onnxruntime
    from onnx import TensorProto, helper

    from soundsift.backends.onnx.runtime import session_options

    rng = np.random.default_rng(0)
    weight_f = rng.standard_normal((size, size), dtype=np.float32)
    weight_q = rng.integers(-64, 64, (size, size), dtype=np.int8)
    scalar = {
        "a_scale": np.array(0.02, np.float32),
        "a_zero": np.array(128, np.uint8),
        "b_scale": np.array(0.01, np.float32),
        "b_zero": np.array(0, np.int8),
        "y_scale": np.array(0.5, np.float32),
        "y_zero": np.array(128, np.uint8),
    }

    def graph(kind: str) -> bytes:
        initializers = {"B": weight_f if kind == "fp32" else weight_q, **scalar}
        if kind == "fp32":
            node = helper.make_node("MatMul", ["A", "B"], ["Y"])
            types = (TensorProto.FLOAT, TensorProto.FLOAT)
        elif kind == "MatMulInteger":
            node = helper.make_node("MatMulInteger", ["A", "B", "a_zero", "b_zero"], ["Y"])
            types = (TensorProto.UINT8, TensorProto.INT32)
        else:
            node = helper.make_node(
                "QLinearMatMul", ["A", "a_scale", "a_zero", "B", "b_scale", "b_zero", "y_scale", "y_zero"], ["Y"]
            )
            types = (TensorProto.UINT8, TensorProto.UINT8)
        model = helper.make_model(
            helper.make_graph(
                [node],
                kind,
                [helper.make_tensor_value_info("A", types[0], [size, size])],
                [helper.make_tensor_value_info("Y", types[1], [size, size])],
                [onnx.numpy_helper.from_array(value, name) for name, value in initializers.items()],
            ),
            opset_imports=[helper.make_opsetid("", 17)],
        )
        return model.SerializeToString()

    inputs = {
        "fp32": rng.standard_normal((size, size), dtype=np.float32),
        "MatMulInteger": rng.integers(0, 256, (size, size), dtype=np.uint8),
        "QLinearMatMul": rng.integers(0, 256, (size, size), dtype=np.uint8),
    }
    flops = 2.0 * size**3
    peaks = {}
    for kind, value in inputs.items():
        session = onnxruntime.InferenceSession(
            graph(kind), session_options(threads), providers=["CPUExecutionProvider"]
        )
        session.run(None, {"A": value})
        best, deadline = float("inf"), time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            begin = time.perf_counter()
            session.run(None, {"A": value})
            best = min(best, time.perf_counter() - begin)
        peaks[kind] = flops / best / 1e9
    return {
        "fp32_gflops": peaks["fp32"],
        "int8_matmulinteger_gops": peaks["MatMulInteger"],
        "int8_qlinearmatmul_gops": peaks["QLinearMatMul"],
        "int8_gops": max(peaks["MatMulInteger"], peaks["QLinearMatMul"]),
        "size": size,
    }


def time_graphs(paths: list[str], calls: int = 8, threads: int | None = None) -> list[dict[str, Any]]:
    """ms per batch-1 call of each audio graph (log-mel-like random input, as the model sees it),
    with soundsift's serving session options. All sessions are loaded first, then called in turns
    of one untimed and ``TURN`` timed calls each, so that a neighbour's load on a shared machine falls
    on every graph alike while each still runs back to back, hot, as a busy server's does (the
    untimed call wakes the session's threads and caches). ``vs_first`` is the median over turns of
    this graph's time over the first graph's in the same round. One row per path given, in order (the
    same graph twice measures the noise)."""
    import onnxruntime

    from soundsift.backends.onnx.runtime import session_options

    sessions = [
        onnxruntime.InferenceSession(str(path), session_options(threads), providers=["CPUExecutionProvider"])
        for path in paths
    ]
    feeds = [_random_feeds(session) for session in sessions]
    times: list[list[float]] = [[] for _ in paths]
    for _ in range(math.ceil(calls / TURN)):
        for session, feed, graph_times in zip(sessions, feeds, times):
            session.run(None, feed)
            for _ in range(TURN):
                begin = time.perf_counter()
                session.run(None, feed)
                graph_times.append(1000 * (time.perf_counter() - begin))
    first = np.array(times[0])
    return [
        {
            "graph": path,
            "median_ms": float(np.median(graph_times)),
            "best_ms": min(graph_times),
            "vs_first": float(np.median(np.array(graph_times) / first)),
            "calls": len(graph_times),
        }
        for path, graph_times in zip(paths, times)
    ]


def _random_feeds(session: Any) -> dict[str, np.ndarray]:
    shape = [dim if isinstance(dim, int) else 1 for dim in session.get_inputs()[0].shape]
    rng = np.random.default_rng(0)
    values = {
        "input_features": (rng.standard_normal(shape) * 10 - 40).astype(np.float32),
        "is_longer": np.zeros((1, 1), bool),
    }
    return {graph_input.name: values[graph_input.name] for graph_input in session.get_inputs()}


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--graph", help="an exported graph (fp32) whose FLOPs to count")
    parser.add_argument("--threads", type=int, help="intra-op threads (default: physical cores)")
    parser.add_argument("--size", type=int, default=1024, help="M = K = N of the microbenchmark's product")
    parser.add_argument("--time", nargs="+", default=[], metavar="GRAPH", help="audio graphs to time at batch 1")
    parser.add_argument("--calls", type=int, default=8, help="timed calls per graph (--time), in turns with the others")
    parser.add_argument("--no-peak", dest="peak", action="store_false", help="skip the GEMM peak")
    args = parser.parse_args()
    report: dict[str, Any] = {"load_average_before": load_average()}
    if args.peak:
        report["peak"] = gemm_peak(args.threads, args.size)
    if args.graph:
        report["graph"] = graph_flops(args.graph)
    if args.time:
        report["timed"] = time_graphs(args.time, args.calls, args.threads)
    report["load_average_after"] = load_average()
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
