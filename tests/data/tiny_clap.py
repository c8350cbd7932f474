"""Build a tiny, randomly initialised fused CLAP checkpoint that loads like a real one.

The tokenizer is a small byte-level BPE trained here (offline) on the shared benchmark label
names; the feature extractor has the real checkpoint's settings (48 kHz, 10 s, 64 mels), so the
audio pipeline is exercised at its true shape while the networks stay small.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from tokenizers import ByteLevelBPETokenizer
from transformers import ClapConfig, ClapFeatureExtractor, ClapModel, ClapProcessor, RobertaTokenizer

from tests.data.shared import LABEL_SETS

GLOSSARY = Path(__file__).resolve().parents[2] / "soundsift" / "data" / "glossary.tsv"

SPECIAL_TOKENS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
# Default init (std 0.02) gives a tiny text tower whose outputs barely depend on the input; a wider
# spread keeps random embeddings distinguishable so tests can tell labels and clips apart.
WEIGHT_STD = 0.3


def training_corpus() -> list[str]:
    """Sound names for the tokenizer: the shared benchmark label sets, or, without ../shared, the
    English side of the package's own glossary (the same vocabulary of everyday sounds)."""
    names: list[str] = []
    for path in sorted(LABEL_SETS.glob("*.json")):
        names.extend(json.loads(path.read_text()))
    if not names:
        lines = GLOSSARY.read_text(encoding="utf-8").splitlines()
        names = [phrase for line in lines if "\t" in line for phrase in line.split("\t")[0].split("|")]
    return [f"This is a sound of {name}." for name in names] + ["a recording of", "狗叫声 猫叫声 鸟叫声"]


# The audio encoder's proportions, scaled down: HTSAT-tiny (clap-htsat-*) and HTSAT-base
# (larger_clap_*: wider patches, a deeper third stage, no fusion).
AUDIO_SHAPES = {
    "tiny": {
        "patch_embeds_hidden_size": 8,
        "hidden_size": 64,
        "depths": [2, 2, 2, 2],
        "num_attention_heads": [2, 2, 4, 4],
    },
    "base": {
        "patch_embeds_hidden_size": 16,
        "hidden_size": 128,
        "depths": [2, 2, 4, 2],
        "num_attention_heads": [2, 4, 8, 8],
    },
}


def randomize_batch_norms(model: ClapModel) -> None:
    """Batch-norm statistics and scales unlike a fresh layer's identity (mean 0, variance 1, weight 1,
    bias 0), which the tiny model keeps (its behaviour in the other tests depends on it), so that a
    re-expression that folds them wrongly cannot pass a parity test. The norm over mel bins gets
    statistics of log-mels in dB, as a trained checkpoint's has."""
    mel_norm = model.audio_model.audio_encoder.batch_norm
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            mean, spread = (-40.0, 5.0) if module is mel_norm else (0.0, 0.1)
            scale = 100.0 if module is mel_norm else 1.0
            module.running_mean.normal_(mean, spread)
            module.running_var.uniform_(0.5 * scale, 2.0 * scale)
            module.weight.normal_(1.0, 0.1)
            module.bias.normal_(0.0, 0.1)


def build_tiny_clap(folder: Path, *, fusion: bool = True, seed: int = 0, shape: str = "tiny") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(training_corpus(), vocab_size=800, min_frequency=1, special_tokens=SPECIAL_TOKENS)
    bpe.save_model(str(folder))
    (folder / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 77}))
    tokenizer = RobertaTokenizer.from_pretrained(folder)
    extractor = ClapFeatureExtractor(
        feature_size=64,
        sampling_rate=48_000,
        hop_length=480,
        max_length_s=10,
        fft_window_size=1024,
        frequency_min=50,
        frequency_max=14_000,
        truncation="fusion" if fusion else "rand_trunc",
        padding="repeatpad",
    )
    config = ClapConfig(
        text_config={
            "vocab_size": tokenizer.vocab_size,
            "hidden_size": 32,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "intermediate_size": 37,
            "max_position_embeddings": 80,
            "projection_dim": 16,
            "pad_token_id": tokenizer.pad_token_id,
            "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id,
        },
        audio_config={
            "spec_size": 256,
            "num_mel_bins": 64,
            "window_size": 8,
            "patch_size": 4,
            "patch_stride": [4, 4],
            **AUDIO_SHAPES[shape],
            "enable_fusion": fusion,
            "projection_dim": 16,
            "fusion_num_hidden_layers": 1,
        },
        projection_dim=16,
    )
    torch.manual_seed(seed)
    model = ClapModel(config).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.dim() > 1:
                parameter.normal_(0.0, WEIGHT_STD)
    model.save_pretrained(folder)
    ClapProcessor(feature_extractor=extractor, tokenizer=tokenizer).save_pretrained(folder)
    return folder
