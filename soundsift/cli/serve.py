"""`soundsift serve`: the web page and HTTP API."""

from __future__ import annotations

import argparse

from soundsift.cli.common import (
    add_max_duration_option,
    add_model_options,
    add_translation_options,
    default_of,
    server_settings_from_args,
    settings_from_args,
)
from soundsift.core.settings import ModelSettings
from soundsift.optional import GRADIO, SERVER
from soundsift.serving.settings import ServerSettings


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "serve",
        help="start the web page and HTTP API",
        description="Start one process serving the web page (/) and the HTTP API (/api/*, docs at /docs). "
        "Each model is loaded once and warmed up, and the port bound, before 'Running on local URL' is printed. "
        "Set SOUNDSIFT_API_KEY (8+ characters) to require it on every route that can run the model: "
        "'Authorization: Bearer <key>' for the API, a login at /login for the page.",
    )
    server = parser.add_argument_group("server")
    server.add_argument(
        "--host",
        help=f"address to listen on (default {default_of(ServerSettings, 'host')}; 0.0.0.0 exposes it to the network)",
    )
    server.add_argument("--port", type=int, help=f"TCP port (default {default_of(ServerSettings, 'port')})")
    server.add_argument(
        "--gpus", help="'all', 'none' or GPU indices like '0,1': one model replica per GPU (overrides --device)"
    )
    server.add_argument(
        "--replicas",
        type=int,
        help=f"model replicas per device (default {default_of(ServerSettings, 'replicas')}); on a CPU each gets "
        "--threads intra-op threads, by default an equal share of the physical cores",
    )
    server.add_argument(
        "--oversubscribe",
        action="store_true",
        default=None,
        help="allow replicas x threads above the physical cores (refused otherwise)",
    )
    server.add_argument(
        "--cors-origin",
        dest="cors_origins",
        action="append",
        metavar="ORIGIN",
        help="allow cross-origin requests from ORIGIN ('*' for any); a named ORIGIN (not '*') may also use the "
        "page's session cookie; repeatable",
    )
    add_translation_options(parser.add_argument_group("labels"))
    limits = parser.add_argument_group("limits")
    limits.add_argument(
        "--max-upload-mb",
        dest="max_upload_mb",
        type=float,
        help=f"largest request body (default {default_of(ServerSettings, 'max_upload_mb')})",
    )
    add_max_duration_option(limits)
    limits.add_argument(
        "--max-labels", type=int, help=f"most labels per request (default {default_of(ModelSettings, 'max_labels')})"
    )
    limits.add_argument(
        "--max-label-chars",
        type=int,
        help=f"longest label in characters (default {default_of(ModelSettings, 'max_label_chars')})",
    )
    limits.add_argument(
        "--max-batch-files",
        type=int,
        help=f"most files per batch request (default {default_of(ServerSettings, 'max_batch_files')})",
    )
    limits.add_argument(
        "--micro-batch-size",
        type=int,
        help=f"most clips grouped into one model call (default {default_of(ServerSettings, 'micro_batch_size')})",
    )
    limits.add_argument(
        "--micro-batch-wait-ms",
        type=float,
        help=f"longest wait for more clips to batch, ms (default {default_of(ServerSettings, 'micro_batch_wait_ms')})",
    )
    limits.add_argument(
        "--max-queue",
        type=int,
        help="clips admitted at once (decoding or waiting for the model) before 503 "
        f"(default {default_of(ServerSettings, 'max_queue')})",
    )
    limits.add_argument(
        "--decode-workers",
        type=int,
        help=f"uploads decoded at once (default {default_of(ServerSettings, 'decode_workers')})",
    )
    limits.add_argument(
        "--max-decoded-mb",
        type=float,
        help="most decoded PCM per input, MB at its own rate and channels "
        f"(default {default_of(ModelSettings, 'max_decoded_mb')})",
    )
    limits.add_argument(
        "--max-detect-duration",
        dest="max_detect_duration_s",
        type=float,
        help=f"/api/detect: longest recording, seconds (default {default_of(ServerSettings, 'max_detect_duration_s')})",
    )
    limits.add_argument(
        "--max-detect-windows",
        type=int,
        help=f"/api/detect: most windows per request (default {default_of(ServerSettings, 'max_detect_windows')})",
    )
    limits.add_argument(
        "--graceful-timeout",
        dest="graceful_timeout_s",
        type=float,
        help="on SIGTERM, seconds running requests may finish; queued work then gets 503 "
        f"(default {default_of(ServerSettings, 'graceful_timeout_s')})",
    )
    server.add_argument(
        "--no-ui", dest="ui", action="store_false", default=None, help="serve the HTTP API only, not the web page"
    )
    search = parser.add_argument_group("search")
    search.add_argument("--search-index", metavar="DIR", help="index folder /api/search uses (SOUNDSIFT_SEARCH_INDEX)")
    search.add_argument(
        "--library-roots",
        metavar="DIR[:DIR...]",
        help="folders POST /api/index may index (SOUNDSIFT_LIBRARY_ROOTS); unset: indexing over HTTP is off",
    )
    limits.add_argument(
        "--memory-limit-mb",
        type=float,
        help="memory the models may take, MB; start is refused when the estimate is larger (default: available)",
    )
    add_model_options(
        parser,
        several="repeat to serve several models (loaded once each; a request's 'model' field picks one, or several "
        "joined by '+' as an ensemble; default: the first; SOUNDSIFT_MODELS=a,b)",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    args.model = args.models[0] if args.models else None
    model, server = settings_from_args(args), server_settings_from_args(args)
    for dependency in SERVER:  # one line naming the extra, never an ImportError traceback
        dependency.require("soundsift serve")
    if server.ui:  # an API-only server never imports the page's toolkit
        GRADIO.require("soundsift serve's web page (or serve the API only: --no-ui)")
    from soundsift.serving.app import serve

    return serve(model, server)
