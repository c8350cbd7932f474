"""Edits of an exported audio graph that torch's tracer cannot express.

The tracer records one path through the model and has no control flow, so the fused checkpoints'
fusion branch (soundsift.backends.onnx.htsat_graph.MaskedFusionPatchEmbed) is traced for every clip
and its result selected by ``is_longer`` with a Where. Clips no longer than the model's window
(most clips, and every clip of a live stream) never use it, yet each paid for it: the crops'
convolution and the attentional fusion block, about 2.5 ms of 40 per clip in int8 on 2 cores.
`run_fusion_only_for_longer_clips` moves everything only that Where's fused input needs into an
ONNX If on "any clip in the batch is longer", so a batch of short clips skips it and a batch with
a long clip computes exactly what it did before.

Imported only by soundsift.backends.onnx.export.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

FUSION_SELECT_PREFIX = "/patch_embed/"
IS_LONGER = "is_longer"


def run_fusion_only_for_longer_clips(path: Path) -> None:
    """Rewrite the audio graph at ``path`` in place; ValueError when it has no fusion select."""
    import onnx

    model = onnx.load(str(path))
    _branch_fusion(model.graph)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def _branch_fusion(graph: Any) -> None:  # an onnx GraphProto
    from onnx import TensorProto, helper

    nodes = list(graph.node)
    select = _fusion_select(nodes)
    condition, fused, unfused = nodes[select].input
    producers = {output: index for index, node in enumerate(nodes) for output in node.output}
    needed_elsewhere = _ancestors(
        nodes, producers, [condition, unfused, *(output.name for output in graph.output)], blocked=select
    )
    branch = sorted(_ancestors(nodes, producers, [fused]) - needed_elsewhere)
    selected = nodes[select].output[0]
    then_branch = helper.make_graph(
        [nodes[index] for index in branch]
        + [helper.make_node("Where", [condition, fused, unfused], [f"{selected}/fused"], name=nodes[select].name)],
        "fusion_for_longer_clips",
        [],
        [helper.make_tensor_value_info(f"{selected}/fused", TensorProto.FLOAT, None)],
    )
    else_branch = helper.make_graph(
        [helper.make_node("Identity", [unfused], [f"{selected}/unfused"])],
        "no_clip_longer",
        [],
        [helper.make_tensor_value_info(f"{selected}/unfused", TensorProto.FLOAT, None)],
    )
    any_longer = [
        # A sum, not a max: the sum of no rows is 0 (false), where ReduceMax of nothing is INT32_MIN.
        helper.make_node("Cast", [IS_LONGER], ["is_longer/int32"], to=TensorProto.INT32, name="/any_longer/Cast"),
        helper.make_node("ReduceSum", ["is_longer/int32"], ["is_longer/count"], keepdims=0, name="/any_longer/Count"),
        helper.make_node("Cast", ["is_longer/count"], ["is_longer/any"], to=TensorProto.BOOL, name="/any_longer/Any"),
    ]
    branched = helper.make_node(
        "If", ["is_longer/any"], [selected], then_branch=then_branch, else_branch=else_branch, name="/patch_embed/If"
    )
    moved = set(branch)
    edited: list[Any] = []
    for index, node in enumerate(nodes):
        if index == select:
            edited.extend([*any_longer, branched])
        elif index not in moved:
            edited.append(node)
    del graph.node[:]
    graph.node.extend(edited)


def _fusion_select(nodes: list[Any]) -> int:
    selects = [
        index
        for index, node in enumerate(nodes)
        if node.op_type == "Where" and node.name.startswith(FUSION_SELECT_PREFIX)
    ]
    if len(selects) != 1:
        raise ValueError(f"expected one fusion Where under {FUSION_SELECT_PREFIX}, found {len(selects)}")
    return selects[0]


def _ancestors(nodes: list[Any], producers: dict[str, int], tensors: Iterable[str], blocked: int = -1) -> set[int]:
    """Indices of the nodes whose outputs ``tensors`` depend on, not looking through ``blocked``."""
    found: set[int] = set()
    pending = list(tensors)
    while pending:
        index = producers.get(pending.pop(), -1)
        if index < 0 or index == blocked or index in found:
            continue
        found.add(index)
        pending.extend(name for name in nodes[index].input if name)
    return found
