"""What the page's tabs share: the request's language, the uploaded file, and answers that are
messages in the page instead of exceptions (a user's mistake is not a server error)."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import gradio as gr
import pandas as pd

from soundsift.errors import QueueFullError, SoundsiftError
from soundsift.i18n.page_text import language_of, message
from soundsift.serving.service import ClassificationService, Upload

logger = logging.getLogger("soundsift.page")


class PageProblem(Exception):
    """Something the user can fix, already worded for the page (in the request's language)."""


def request_language(request: gr.Request | None) -> str:
    headers = getattr(request, "headers", None) or {}
    return language_of(headers.get("accept-language"))


@contextlib.contextmanager
def open_upload(upload_root: Path, audio_path: str, language: str) -> Iterator[Upload]:
    """The page's uploaded file, opened for decoding. Gradio hands over a path; it must be a regular
    file inside the upload folder (the HTTP guard already checked the request; this is the second lock)."""
    real = Path(os.path.realpath(audio_path))
    if not real.is_relative_to(upload_root) or not real.is_file():
        raise PageProblem(message(language, "upload_again"))
    with open(real, "rb") as handle:
        yield Upload.of(handle, real.name)


@contextlib.contextmanager
def as_page_problems(action: str, language: str) -> Iterator[None]:
    """Errors become one worded message: the user's own mistakes are logged in one line, anything
    unexpected with its traceback (and the user sees only that something went wrong)."""
    try:
        yield
    except SoundsiftError as error:
        logger.info("%s refused (%s): %s", action, error.code, error)
        raise PageProblem(user_message(error)) from None
    except QueueFullError:
        raise PageProblem(message(language, "busy")) from None
    except PageProblem:
        raise
    except Exception:
        logger.exception("%s failed", action)
        raise PageProblem(message(language, "server_error")) from None


def user_message(error: SoundsiftError) -> str:
    text = str(error)
    if error.source:
        text = text.replace(f"{error.source}: ", "", 1)
    return text[:1].upper() + text[1:]


def score_text(value: float) -> str:
    """Scores shown with the same three decimals everywhere on the page."""
    return f"{value:.3f}"


def empty_table(columns: list[str]) -> pd.DataFrame:
    return pd.DataFrame(columns=columns)


def adapter_choices(service: ClassificationService) -> list[str]:
    """What a "Taught sounds" choice offers: none, then every stored adapter."""
    return ["", *service.adapters.names()]
