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


def full_size_random_model(out: Path, config_dir: Path = SHARED_CONFIG, seed: int = 0, fusion: bool = True) -> Path:
    """Save (once) and return a folder that loads with from_pretrained like the real checkpoint.

    ``fusion=False`` gives the unfused variant (as laion/clap-htsat-unfused): same sizes, no fusion branch."""
    if (out / "config.json").exists() and any(out.glob("*.safetensors")):
        return out
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    config = ClapConfig.from_pretrained(config_dir)
    config.audio_config.enable_fusion = fusion
    model = ClapModel(config).eval()
    model.save_pretrained(out)
    processor = ClapProcessor.from_pretrained(config_dir)
    if not fusion:
        processor.feature_extractor.truncation = "rand_trunc"
    processor.save_pretrained(out)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("/tmp/soundsift-clap-random"))
    parser.add_argument("--config", type=Path, default=SHARED_CONFIG)
    parser.add_argument("--unfused", action="store_true", help="the unfused variant")
    args = parser.parse_args()
    print(full_size_random_model(args.out, args.config, fusion=not args.unfused))


if __name__ == "__main__":
    main()
