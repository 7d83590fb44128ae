"""Is the MLflow tracking URI one bert-eval can log to, and is its server answering?"""

from __future__ import annotations

import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

from bert_eval.spec import check_tracking_uri_form

__all__ = ["TrackingUnavailable", "check_tracking_server", "resolve_tracking_uri"]


class TrackingUnavailable(RuntimeError):
    """The tracking server cannot be reached (or the URI cannot be used); the message names the URI."""


def resolve_tracking_uri(uri: str | None, default: str | None) -> str:
    """The URI to log to: the experiment's, else the MLFLOW_TRACKING_URI setting.

    Raises:
        TrackingUnavailable: neither is set, or the one chosen is not a tracking URI.
    """
    chosen = uri or default
    if not chosen:
        raise TrackingUnavailable(
            "tracking.mlflow.uri: not set; give it in the experiment file "
            "(tracking: {mlflow: {uri: http://host:5000}}) "
            "or set MLFLOW_TRACKING_URI"
        )
    try:
        return check_tracking_uri_form(chosen)
    except ValueError as exc:
        raise TrackingUnavailable(str(exc)) from None


def check_tracking_server(uri: str, *, timeout_s: float = 5.0) -> None:
    """Return when `uri` can be logged to now: an http(s) server answers its `/health` endpoint, a `file:`
    store's directory can be created.

    Raises:
        TrackingUnavailable: naming the URI, the cause and what to do.
    """
    parts = urlsplit(uri)
    if parts.scheme in ("http", "https"):
        url = uri.rstrip("/") + "/health"
        try:
            with urllib.request.urlopen(url, timeout=timeout_s) as response:
                if response.status == 200:
                    return
                problem = f"HTTP {response.status}"
        except urllib.error.HTTPError as exc:
            problem = f"HTTP {exc.code} from {url}"
        except (urllib.error.URLError, OSError, ValueError) as exc:
            problem = str(getattr(exc, "reason", exc))
        raise TrackingUnavailable(
            f"tracking.mlflow.uri {uri}: the MLflow server does not answer ({problem}); start it "
            "(mlflow server --host 0.0.0.0 --port 5000) or correct the URI"
        )
    if parts.scheme == "file":
        try:
            Path(parts.path).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise TrackingUnavailable(
                f"tracking.mlflow.uri {uri}: cannot create the store's directory ({exc})"
            ) from None
