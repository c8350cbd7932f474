"""Optional machine translation of labels the glossary does not cover (a transformers seq2seq model,
Helsinki-NLP/opus-mt-zh-en by default), loaded with from_pretrained and cached per label."""

from __future__ import annotations

import threading
from pathlib import Path

from soundsift.errors import ModelLoadError
from soundsift.optional import SENTENCEPIECE, TRANSFORMERS

DEFAULT_TRANSLATOR = "Helsinki-NLP/opus-mt-zh-en"


class MachineTranslator:
    def __init__(self, model: str = DEFAULT_TRANSLATOR) -> None:
        TRANSFORMERS.require("machine translation (--translator)")
        SENTENCEPIECE.require("machine translation (--translator)")
        from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

        local = Path(model).expanduser()
        reference = str(local) if local.is_dir() else model
        try:
            self._tokenizer = AutoTokenizer.from_pretrained(reference)
            self._model = AutoModelForSeq2SeqLM.from_pretrained(reference).eval()
        except (OSError, ValueError, ImportError) as error:
            raise ModelLoadError(
                f"could not load the translation model {model!r} ({error}). It is loaded like the CLAP model: a hub "
                "id from the cache or the hub, or a local folder (SOUNDSIFT_TRANSLATOR / --translator)."
            ) from error
        self.model_id = model
        self._cache: dict[str, str] = {}
        self._lock = threading.Lock()
        self.calls = 0

    def translate(self, text: str) -> str:
        with self._lock:
            if text not in self._cache:
                self._cache[text] = self._generate(text)
            return self._cache[text]

    def _generate(self, text: str) -> str:
        import torch

        self.calls += 1
        batch = self._tokenizer([text], return_tensors="pt", truncation=True, max_length=64)
        with torch.inference_mode():
            output = self._model.generate(**batch, num_beams=4, max_new_tokens=32)
        return str(self._tokenizer.decode(output[0], skip_special_tokens=True)).strip()
