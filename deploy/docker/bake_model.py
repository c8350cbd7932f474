"""Put the model named by the MODEL build argument into a folder of the image (Dockerfile helper).

    python bake_model.py MODEL CONTEXT_COPY OUT

CONTEXT_COPY holds MODEL's files when MODEL named a folder of the build context (the Dockerfile
copies it there); then it is used as is. Otherwise MODEL is a Hugging Face hub id and its config,
processor/tokenizer files and weights (safetensors when the repository has them, else the
PyTorch .bin) are downloaded into OUT.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

CONFIG_PATTERNS = ["*.json", "*.txt", "*.model"]


def bake(model: str, context_copy: Path, out: Path) -> str:
    if context_copy.is_dir() and any(context_copy.iterdir()):
        shutil.copytree(context_copy, out, dirs_exist_ok=True)
        return f"folder {model} from the build context"
    from huggingface_hub import list_repo_files, snapshot_download

    try:
        files = list_repo_files(model)
        weights = ["*.safetensors"] if any(name.endswith(".safetensors") for name in files) else ["*.bin"]
        snapshot_download(model, local_dir=out, allow_patterns=CONFIG_PATTERNS + weights)
    except Exception as error:  # no network, no such repository, no access
        raise SystemExit(
            f"MODEL={model!r} is not a folder of the build context, and downloading it from the Hugging Face "
            f"hub failed: {type(error).__name__}: {error}"
        ) from None
    return f"hub model {model}"


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    model, context_copy, out = argv[0], Path(argv[1]), Path(argv[2])
    print(f"baked {bake(model, context_copy, out)} into {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
