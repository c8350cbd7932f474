"""Materialise the full-size CLAP architecture with random weights, for speed and memory benchmarks.

Uses the real checkpoint's config, processor and tokenizer from ../shared/models/clap-htsat-fused-config
(no weights are available here). Scores from it mean nothing; its compute and memory are real.

    python benchmarks/random_model.py --out /tmp/clap-random   # prints the folder
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from transformers import ClapConfig, ClapModel, ClapProcessor

SHARED_CONFIG = Path(__file__).resolve().parents[2] / "shared" / "models" / "clap-htsat-fused-config"
# The audio encoder of laion/larger_clap_general, _music and _music_and_speech (HTSAT-base): wider
# patch embeddings and hidden size, a 12-block third stage, no fusion. The text side is the same.
HTSAT_BASE = {
    "patch_embeds_hidden_size": 128,
    "hidden_size": 1024,
    "depths": [2, 2, 12, 2],
    "num_attention_heads": [4, 8, 16, 32],
}


def full_size_random_model(
    out: Path, config_dir: Path = SHARED_CONFIG, seed: int = 0, fusion: bool = True, base: bool = False
) -> Path:
    """Save (once) and return a folder that loads with from_pretrained like the real checkpoint.

    ``fusion=False`` gives the unfused variant (as laion/clap-htsat-unfused): same sizes, no fusion
    branch; ``base=True`` the HTSAT-base audio encoder of the larger_clap checkpoints (unfused)."""
    if (out / "config.json").exists() and any(out.glob("*.safetensors")):
        return out
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    config = ClapConfig.from_pretrained(config_dir)
    config.audio_config.enable_fusion = fusion and not base
    if base:
        for name, value in HTSAT_BASE.items():
            setattr(config.audio_config, name, value)
    model = ClapModel(config).eval()
    model.save_pretrained(out)
    processor = ClapProcessor.from_pretrained(config_dir)
    if not fusion or base:
        processor.feature_extractor.truncation = "rand_trunc"
    processor.save_pretrained(out)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("/tmp/soundsift-clap-random"))
    parser.add_argument("--config", type=Path, default=SHARED_CONFIG)
    parser.add_argument("--unfused", action="store_true", help="the unfused variant")
    parser.add_argument(
        "--htsat-base", action="store_true", help="the larger_clap checkpoints' HTSAT-base audio encoder"
    )
    args = parser.parse_args()
    print(full_size_random_model(args.out, args.config, fusion=not args.unfused, base=args.htsat_base))


if __name__ == "__main__":
    main()
