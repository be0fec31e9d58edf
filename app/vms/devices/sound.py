"""The sound card; its output goes to the SPICE client (libvirt's default audio backend with SPICE)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Literal

SoundModel = Literal["none", "ich9", "ich6", "ac97"]
SOUND_MODELS: tuple[SoundModel, ...] = ("none", "ich9", "ich6", "ac97")


def sound(model: SoundModel) -> ET.Element | None:
    """``None`` for no sound card."""
    if model == "none":
        return None
    return ET.Element("sound", {"model": model})
