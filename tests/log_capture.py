"""The dashboard's logging as ``kvm-vdi`` configures it, captured into a string for a test.

Logging is process-wide: :func:`dashboard_logging` saves the root handlers and the
levels it changes and puts them back afterwards, so pytest's own capture works again.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from app.logging_setup import APP_LOGGERS, LIBRARY_LOGGERS, access_log, configure_logging
from app.settings import Settings


@contextmanager
def dashboard_logging(**settings: Any) -> Iterator[io.StringIO]:
    """``configure_logging`` with these settings (log_level, log_format ...) into a StringIO."""
    root = logging.getLogger()
    names = (*LIBRARY_LOGGERS, *APP_LOGGERS, access_log.name)
    saved_handlers = list(root.handlers)
    saved_root_level = root.level
    saved = {
        name: (logger.level, list(logger.handlers), logger.propagate)
        for name in names
        for logger in [logging.getLogger(name)]
    }
    stream = io.StringIO()
    configure_logging(Settings(data_dir=Path("unused"), **settings), stream)
    try:
        yield stream
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in saved_handlers:
            root.addHandler(handler)
        root.setLevel(saved_root_level)
        for name, (level, handlers, propagate) in saved.items():
            logger = logging.getLogger(name)
            logger.setLevel(level)
            logger.handlers[:] = handlers
            logger.propagate = propagate
        logging.captureWarnings(False)
