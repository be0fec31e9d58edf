"""The one helper the builders share: a child element with attributes and optional text."""

from __future__ import annotations

import xml.etree.ElementTree as ET


def sub(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
    element = ET.SubElement(parent, tag, attrs)
    if text is not None:
        element.text = text
    return element


def boot(parent: ET.Element, index: int | None) -> None:
    """``<boot order='N'/>`` on a device that is in the boot order (1-based)."""
    if index is not None:
        sub(parent, "boot", order=str(index))


def to_text(element: ET.Element) -> str:
    ET.indent(element)
    return ET.tostring(element, encoding="unicode")
