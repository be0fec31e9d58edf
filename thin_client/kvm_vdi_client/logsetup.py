"""Logging to stderr (the journal under systemd), syslog or a file, as configured."""

from __future__ import annotations

import logging
import logging.handlers
from pathlib import Path

from kvm_vdi_client.config import LoggingConfig

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure_logging(config: LoggingConfig) -> None:
    handler: logging.Handler
    if config.target == "syslog":
        address = "/dev/log" if Path("/dev/log").exists() else ("localhost", 514)
        handler = logging.handlers.SysLogHandler(
            address=address, facility=logging.handlers.SysLogHandler.LOG_USER
        )
        handler.setFormatter(
            logging.Formatter("kvm-vdi-client[%(process)d]: %(levelname)s %(name)s: %(message)s")
        )
    elif config.target == "file":
        assert config.file is not None
        config.file.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.handlers.WatchedFileHandler(config.file)
        handler.setFormatter(logging.Formatter(FORMAT))
    else:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter(FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(config.level.upper())
