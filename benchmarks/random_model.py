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


def full_size_random_model(out: Path, config_dir: Path = SHARED_CONFIG, seed: int = 0) -> Path:
    """Save (once) and return a folder that loads with from_pretrained like the real checkpoint."""
    if (out / "config.json").exists() and any(out.glob("*.safetensors")):
        return out
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model = ClapModel(ClapConfig.from_pretrained(config_dir)).eval()
    model.save_pretrained(out)
    ClapProcessor.from_pretrained(config_dir).save_pretrained(out)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("/tmp/soundsift-clap-random"))
    parser.add_argument("--config", type=Path, default=SHARED_CONFIG)
    args = parser.parse_args()
    print(full_size_random_model(args.out, args.config))


if __name__ == "__main__":
    main()
