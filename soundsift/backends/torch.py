"""transformers + PyTorch backend: ClapModel and ClapProcessor, loaded with from_pretrained."""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import ClapModel, ClapProcessor
from transformers.utils import logging as transformers_logging

from soundsift.backends.mel import MelSettings
from soundsift.errors import ConfigurationError, ModelLoadError

logger = logging.getLogger(__name__)

# CLAP was trained with 77-token captions; longer prompts are truncated the same way.
MAX_TEXT_TOKENS = 77


@dataclass(frozen=True)
class Checkpoint:
    """A CLAP checkpoint as from_pretrained loads it: the model, its processor, and what they imply."""

    model: ClapModel
    processor: ClapProcessor

    @property
    def mel_settings(self) -> MelSettings:
        audio_config: Any = self.model.config.audio_config
        return MelSettings.from_extractor_config(
            self.processor.feature_extractor.to_dict(), fusion=bool(audio_config.enable_fusion)
        )

    @property
    def logit_scale(self) -> float:
        return float(self.model.logit_scale_a.exp().item())


class TorchBackend:
    """CLAP on PyTorch. Thread-safe: model calls are serialised by a lock."""

    def __init__(self, model: str, *, device: str = "auto", fp16: bool = False) -> None:
        self.device = resolve_device(device)
        self.clips_per_call: int | None = None  # torch runs a batch at once
        if fp16 and not self.device.startswith("cuda"):
            raise ConfigurationError("fp16 needs a CUDA device; drop --fp16 or use --device cuda")
        self.model_id = model
        checkpoint = load_checkpoint(model)
        self.mel_settings = checkpoint.mel_settings
        self.logit_scale = checkpoint.logit_scale
        self.embedding_dim = int(checkpoint.model.config.projection_dim)
        self._dtype = torch.float16 if fp16 else torch.float32
        clap: Any = checkpoint.model  # transformers wraps .to() in an untyped decorator
        self._model = clap.to(device=self.device, dtype=self._dtype).eval()
        self._tokenizer = checkpoint.processor.tokenizer
        self._lock = threading.Lock()

    def embed_audio(self, features: np.ndarray, is_longer: np.ndarray) -> np.ndarray:
        inputs = torch.from_numpy(features).to(self.device, self._dtype)
        longer = torch.from_numpy(is_longer).to(self.device)
        with self._lock, _subnormals_flushed(), torch.inference_mode():
            output = self._model.get_audio_features(input_features=inputs, is_longer=longer)
            return _unit_rows(_pooled(output))

    def embed_text(self, texts: list[str]) -> np.ndarray:
        tokens = self._tokenizer(
            texts, padding=True, truncation=True, max_length=MAX_TEXT_TOKENS, return_tensors="pt"
        ).to(self.device)
        with self._lock, _subnormals_flushed(), torch.inference_mode():
            output = self._model.get_text_features(
                input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"]
            )
            return _unit_rows(_pooled(output))


@contextlib.contextmanager
def _subnormals_flushed() -> Iterator[None]:
    """Subnormal floats slow CPU arithmetic many-fold; flushing them to zero (values below 1e-38)
    changes no score. The CPU flag is per thread (torch's worker threads inherit it when created), so
    it is set only around model calls and the caller's thread is left as it was found."""
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(False)


def resolve_device(device: str) -> str:
    """Map auto/cpu/cuda/cuda:N to a torch device string, checking that it exists."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigurationError(f"device {device!r} was asked for but no CUDA GPU is available")
        index = int(device.split(":")[1]) if ":" in device else 0
        if index >= torch.cuda.device_count():
            raise ConfigurationError(
                f"device {device!r} does not exist: {torch.cuda.device_count()} CUDA device(s) visible"
            )
    return device


def load_checkpoint(model: str) -> Checkpoint:
    """``model`` (hub id or folder) through from_pretrained, with a ModelLoadError that says what to do."""
    local = Path(model).expanduser()
    if local.exists() and not local.is_dir():
        raise ModelLoadError(f"model path {model!r} is a file; give the folder that holds config.json")
    if not local.exists() and model.startswith(("/", ".", "~")):
        raise ModelLoadError(f"model folder {model!r} does not exist")
    transformers_logging.disable_progress_bar()
    reference = str(local) if local.is_dir() else model
    try:
        clap = ClapModel.from_pretrained(reference)
        processor = ClapProcessor.from_pretrained(reference)
    except (OSError, ValueError) as error:
        raise ModelLoadError(_unreachable_message(model, local.is_dir(), error)) from error
    return Checkpoint(clap, processor)


def _unreachable_message(model: str, is_folder: bool, error: Exception) -> str:
    if is_folder:
        return (
            f"could not load a CLAP checkpoint from the folder {model!r} ({error}). The folder needs "
            "config.json, the weights (model.safetensors or pytorch_model.bin) and the processor files."
        )
    return (
        f"could not load the CLAP model {model!r}: it is not in the local Hugging Face cache and the hub "
        "could not be reached. Download it where there is internet "
        f"(`huggingface-cli download {model}`, then copy the cache or folder here), and set "
        "SOUNDSIFT_MODEL (or --model) to the local folder, or HF_HOME to the cache."
    )


def _pooled(output: Any) -> torch.Tensor:
    # transformers >= 5 returns a ModelOutput whose pooler_output is the projected embedding;
    # older releases return the tensor itself.
    return output if isinstance(output, torch.Tensor) else output.pooler_output


def _unit_rows(embeddings: torch.Tensor) -> np.ndarray:
    embeddings = torch.nn.functional.normalize(embeddings.float(), dim=-1)
    return embeddings.cpu().numpy()
