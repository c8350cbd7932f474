"""CLAP's audio encoder (HTSAT, a Swin transformer) re-expressed for ONNX export.

Same weights and the same arithmetic as transformers' ``ClapAudioEncoder``, laid out so that ONNX
Runtime does less work around the matrix products:

- Tokens stay in window order. Swin's roll, window partition, window reverse and un-roll become one
  constant-index Gather between blocks, and patch merging gathers straight into the next stage's
  window order; the final average pool does not care about order.
- Query, key and value are one matrix product, with 1/sqrt(head size) folded into the query weights.
- The relative position bias and the shifted-window mask are summed once, at export, into a
  constant per block (transformers rebuilds both on every call).
- Hidden states are 2-D (tokens x channels), so every linear layer exports as one Gemm with its bias.
- The batch norm over mel bins is one constant multiply-add on the last axis; transformers transposes the
  mels to channels and back around it, and those two transposes of the 4-channel input took 4-5 ms per
  clip on 2 cores, longer than the rest of the patch embedding.

The fused checkpoints pick rows with ``torch.where(is_longer)`` and write the fusion result back by
index, which tracing freezes to whatever branch the example batch took; the patch embedding here
computes the fusion branch for every row and selects by ``is_longer``, so one graph serves short and
long clips alike (and the exporter then puts the branch under an If, so that a batch of short clips
skips it: soundsift.backends.onnx.graph_edits).

Imported only by ``soundsift.backends.onnx.export``: it needs torch, which the onnx serving path does not.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn
from torch.nn import functional


class MaskedFusionPatchEmbed(nn.Module):
    """transformers' ClapAudioPatchEmbed with the fusion branch selected by a mask instead of an index."""

    def __init__(self, original: Any) -> None:  # transformers ClapAudioPatchEmbed (untyped)
        super().__init__()
        self.original = original

    def forward(self, hidden_states: torch.Tensor, is_longer: torch.Tensor) -> torch.Tensor:
        embed = self.original
        global_states = embed.proj(hidden_states[:, 0:1, :, :])
        if not embed.enable_fusion:
            return global_states
        batch = hidden_states.shape[0]
        local = hidden_states[:, 1:, :, :]
        _, channels, height, width = local.shape
        local = embed.mel_conv2d(local.reshape(-1, 1, height, width))
        _, features, out_height, out_width = local.shape
        local = local.reshape(batch, channels, features, out_height, out_width)
        local = local.permute(0, 2, 3, 1, 4).flatten(3)
        local = functional.pad(local, (0, global_states.shape[-1] - local.shape[-1]))
        fused = embed.fusion_model(global_states, local)
        return torch.where(is_longer.reshape(batch, 1, 1, 1), fused, global_states)


def window_order(height: int, width: int, window: int, shift: int) -> torch.Tensor:
    """Natural (row-major) token index of each token in Swin's order: rolled by -shift, windows row-major."""
    rows = (torch.arange(height) + shift) % height
    cols = (torch.arange(width) + shift) % width
    natural = rows[:, None] * width + cols[None, :]
    return natural.reshape(height // window, window, width // window, window).permute(0, 2, 1, 3).reshape(-1)


def inverse(permutation: torch.Tensor) -> torch.Tensor:
    result = torch.empty_like(permutation)
    result[permutation] = torch.arange(len(permutation))
    return result


def supports(clap: Any) -> bool:
    """True when every stage's grid splits into whole windows (all released CLAP checkpoints)."""
    encoder = clap.audio_model.audio_encoder
    window = clap.config.audio_config.window_size
    return all(height % window == 0 and width % window == 0 for height, width in encoder.input_resolutions)


class WindowAttention(nn.Module):
    """Multi-head self-attention inside windows of ``tokens`` tokens, plus its output projection."""

    qkv_weight: torch.Tensor
    qkv_bias: torch.Tensor
    bias: torch.Tensor

    def __init__(self, attention: Any, bias: torch.Tensor) -> None:  # transformers ClapAudioAttention
        super().__init__()
        self_attention = attention.self
        scale = 1 / math.sqrt(self_attention.attention_head_size)
        linears = (self_attention.query, self_attention.key, self_attention.value)
        weights = [linear.weight.detach() for linear in linears]
        biases = [
            linear.bias.detach() if linear.bias is not None else torch.zeros(linear.out_features) for linear in linears
        ]
        self.register_buffer("qkv_weight", torch.cat([weights[0] * scale, weights[1], weights[2]]))
        self.register_buffer("qkv_bias", torch.cat([biases[0] * scale, biases[1], biases[2]]))
        self.output = attention.output.dense
        self.register_buffer("bias", bias)

    def forward(self, hidden_states: torch.Tensor, batch: int) -> torch.Tensor:
        heads, tokens = self.bias.shape[1:3]
        channels = hidden_states.shape[-1]
        qkv = functional.linear(hidden_states, self.qkv_weight, self.qkv_bias)
        qkv = qkv.reshape(-1, tokens, 3, heads, channels // heads).permute(2, 0, 3, 1, 4)
        query, key, value = qkv[0], qkv[1], qkv[2]
        scores = torch.matmul(query, key.transpose(-1, -2)).reshape(batch, -1, heads, tokens, tokens)
        probabilities = torch.softmax(scores + self.bias, dim=-1).reshape(-1, heads, tokens, tokens)
        context = torch.matmul(probabilities, value).permute(0, 2, 1, 3).reshape(-1, channels)
        return self.output(context)


class SwinBlock(nn.Module):
    """One ClapAudioLayer on 2-D hidden states already in this block's window order."""

    def __init__(self, layer: Any, resolution: tuple[int, int], window: int, shift: int) -> None:  # ClapAudioLayer
        super().__init__()
        self.norm_before = layer.layernorm_before
        self.norm_after = layer.layernorm_after
        self.intermediate = layer.intermediate.dense
        self.activation = layer.intermediate.intermediate_act_fn
        self.output = layer.output.dense
        bias = _position_bias(layer.attention.self)
        if shift:
            bias = bias[None] + _shift_mask(resolution, window, shift)[:, None]
        self.attention = WindowAttention(layer.attention, bias if shift else bias[None])

    def forward(self, hidden_states: torch.Tensor, batch: int) -> torch.Tensor:
        hidden_states = hidden_states + self.attention(self.norm_before(hidden_states), batch)
        return hidden_states + self.output(self.activation(self.intermediate(self.norm_after(hidden_states))))


def _position_bias(attention: Any) -> torch.Tensor:
    """The relative position bias, heads x tokens x tokens."""
    table = attention.relative_position_bias_table.detach()
    tokens = attention.window_size[0] * attention.window_size[1]
    return table[attention.relative_position_index.reshape(-1)].reshape(tokens, tokens, -1).permute(2, 0, 1)


def _shift_mask(resolution: tuple[int, int], window: int, shift: int) -> torch.Tensor:
    """Swin's cyclic-shift mask (windows x tokens x tokens): -100 between tokens of different regions."""
    height, width = resolution
    rows = (torch.arange(height) >= height - window).long() + (torch.arange(height) >= height - shift).long()
    cols = (torch.arange(width) >= width - window).long() + (torch.arange(width) >= width - shift).long()
    regions = (rows[:, None] * 3 + cols[None, :]).reshape(-1)[window_order(height, width, window, 0)]
    regions = regions.reshape(-1, window * window)
    different = regions[:, :, None] != regions[:, None, :]
    return different.float() * -100.0


class AudioGraph(nn.Module):
    """Mel features and is_longer in, unit-length projected audio embedding out."""

    mel_scale: torch.Tensor
    mel_shift: torch.Tensor

    def __init__(self, clap: Any) -> None:
        super().__init__()
        encoder = clap.audio_model.audio_encoder
        config = clap.config.audio_config
        self.encoder = encoder
        mel_norm = encoder.batch_norm
        mel_scale = mel_norm.weight.detach() / torch.sqrt(mel_norm.running_var + mel_norm.eps)
        self.register_buffer("mel_scale", mel_scale)
        self.register_buffer("mel_shift", mel_norm.bias.detach() - mel_norm.running_mean * mel_scale)
        self.patch_embed = MaskedFusionPatchEmbed(encoder.patch_embed)
        self.projection = clap.audio_projection
        self.blocks = nn.ModuleList()
        self.merges = nn.ModuleList()
        self.gathers: list[str] = []
        window = config.window_size
        order = torch.arange(math.prod(encoder.input_resolutions[0]))
        for index, stage in enumerate(encoder.layers):
            resolution = encoder.input_resolutions[index]
            if index:
                self._add_gather(_merge_order(encoder.input_resolutions[index - 1], order))
                order = torch.arange(math.prod(resolution))
            for layer in stage.blocks:
                # As in transformers: a stage no larger than one window is not shifted.
                shift = 0 if min(resolution) <= window else int(layer.shift_size)
                height, width = resolution
                block_order = window_order(height, width, window, shift)
                self._add_gather(inverse(order)[block_order])
                order = block_order
                self.blocks.append(SwinBlock(layer, resolution, window, shift))
            if stage.downsample is not None:
                self.merges.append(stage.downsample)
        self.stage_of_block = [index for index, stage in enumerate(encoder.layers) for _ in stage.blocks]

    def _add_gather(self, index: torch.Tensor) -> None:
        name = f"gather_{len(self.gathers)}"
        self.register_buffer(name, index)
        self.gathers.append(name)

    def forward(self, input_features: torch.Tensor, is_longer: torch.Tensor) -> torch.Tensor:
        encoder = self.encoder
        batch = input_features.shape[0]
        normalized = input_features * self.mel_scale + self.mel_shift  # eval-mode batch norm over mel bins
        patches = self.patch_embed(encoder.reshape_mel2img(normalized), is_longer)
        hidden_states = encoder.patch_embed.norm(patches.flatten(2).transpose(1, 2))
        gathers = iter(self.gathers)
        stage = 0
        for block, block_stage in zip(self.blocks, self.stage_of_block):
            if block_stage != stage:
                hidden_states = self._merge(hidden_states, batch, getattr(self, next(gathers)), stage)
                stage = block_stage
            hidden_states = self._permute(hidden_states, batch, getattr(self, next(gathers)))
            hidden_states = block(hidden_states, batch)
        pooled = encoder.norm(hidden_states).reshape(batch, -1, hidden_states.shape[-1]).mean(dim=1)
        return functional.normalize(self.projection(pooled), dim=-1)

    @staticmethod
    def _permute(hidden_states: torch.Tensor, batch: int, index: torch.Tensor) -> torch.Tensor:
        channels = hidden_states.shape[-1]
        return hidden_states.reshape(batch, -1, channels)[:, index].reshape(-1, channels)

    def _merge(self, hidden_states: torch.Tensor, batch: int, index: torch.Tensor, stage: int) -> torch.Tensor:
        merge: Any = self.merges[stage]  # a transformers ClapAudioPatchMerging
        channels = hidden_states.shape[-1]
        merged = hidden_states.reshape(batch, -1, channels)[:, index].reshape(-1, 4 * channels)
        return merge.reduction(merge.norm(merged))


def _merge_order(resolution: tuple[int, int], order: torch.Tensor) -> torch.Tensor:
    """For each token of the merged (half-size) grid, in natural order, the positions in ``order`` of
    the four tokens patch merging concatenates, in transformers' order (row, col) = (0,0), (1,0), (0,1), (1,1)."""
    height, width = resolution
    rows, cols = torch.meshgrid(torch.arange(0, height, 2), torch.arange(0, width, 2), indexing="ij")
    corners = [(rows + row) * width + cols + col for col in range(2) for row in range(2)]
    natural = torch.stack([corner.reshape(-1) for corner in corners], dim=1)
    return inverse(order)[natural]
