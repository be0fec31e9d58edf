"""What a complete, consistent catalogue is: used by the catalogue tests of the dashboard and the launcher."""

from __future__ import annotations

import gettext
import re
from collections.abc import Iterable
from io import BytesIO
from pathlib import Path

from babel.messages.catalog import Catalog, Message
from babel.messages.extract import DEFAULT_KEYWORDS, extract_from_dir
from babel.messages.frontend import parse_mapping_cfg
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po

# The plural rule every Lithuanian catalogue declares (gettext's, three forms).
LITHUANIAN_PLURALS = (
    "nplurals=3; plural=(n%10==1 && n%100!=11 ? 0 : n%10>=2 && (n%100<10 || n%100>=20) ? 1 : 2);"
)
KEYWORDS = {**DEFAULT_KEYWORDS, "N_": None, "lazy_gettext": None}
_PERCENT = re.compile(r"%(?:\((\w+)\))?[-#0 +]*\d*(?:\.\d+)?[diouxXeEfFgGcrsa%]")
_BRACES = re.compile(r"(?<!\{)\{(\w*)(?:[!:][^{}]*)?\}(?!\})")


def read(path: Path, locale: str) -> Catalog:
    with path.open("rb") as handle:
        return read_po(handle, locale=locale)


def extracted(root: Path, mapping_file: Path | None) -> set[str]:
    """The msgids (singulars) marked in the sources under ``root`` right now."""
    if mapping_file is not None:
        with mapping_file.open() as handle:
            method_map, options_map = parse_mapping_cfg(handle)
    else:
        method_map, options_map = [("**.py", "python")], {}
    found = set()
    for _filename, _lineno, message, _comments, _context in extract_from_dir(
        root, method_map, options_map, keywords=KEYWORDS
    ):
        found.add(message[0] if isinstance(message, tuple) else message)
    return found


def placeholders(text: str) -> tuple[list[str], list[str]]:
    percent = sorted(name or "" for name in _PERCENT.findall(text) if name != "%")
    braces = sorted(_BRACES.findall(text))
    return percent, braces


def problems(catalogue: Catalog) -> list[str]:
    """Untranslated, fuzzy, mismatched placeholders, wrong plural count."""
    found: list[str] = []
    for message in catalogue:
        if not message.id:
            continue
        found += message_problems(message, catalogue.num_plurals)
    return found


def message_problems(message: Message, num_plurals: int) -> list[str]:
    label = repr(message.id if isinstance(message.id, str) else message.id[0])
    if message.fuzzy:
        return [f"{label}: marked fuzzy (check the translation, then remove the flag)"]
    if isinstance(message.id, str):
        sources, translations = [message.id], [message.string]
    else:
        sources = list(message.id)
        translations = list(message.string or ())
        if len(translations) != num_plurals:
            return [f"{label}: {len(translations)} plural forms, the language has {num_plurals}"]
    found = []
    for index, text in enumerate(translations):
        if not text:
            found.append(f"{label}: not translated" + (f" (form {index})" if len(translations) > 1 else ""))
            continue
        # Every form has the singular's placeholders or the plural's ({n} may be left out of form 0).
        allowed = [placeholders(source) for source in sources]
        have = placeholders(str(text))
        if have not in allowed and not any(
            set(have[0]) <= set(want[0]) and set(have[1]) <= set(want[1]) and len(sources) > 1
            for want in allowed
        ):
            found.append(f"{label}: placeholders {have} differ from the source's {allowed[0]}")
    return found


def compiled(catalogue: Catalog) -> gettext.GNUTranslations:
    """The catalogue compiled to a .mo, read back by the standard library."""
    buffer = BytesIO()
    write_mo(buffer, catalogue)
    buffer.seek(0)
    return gettext.GNUTranslations(buffer)


def same_translations(mo_file: Path, catalogue: Catalog) -> list[str]:
    """Messages whose compiled translation (``mo_file``) differs from the ``.po`` source."""
    with mo_file.open("rb") as handle:
        shipped = gettext.GNUTranslations(handle)
    fresh = compiled(catalogue)
    shipped_catalog: dict[object, str] = shipped._catalog  # type: ignore[attr-defined]
    fresh_catalog: dict[object, str] = fresh._catalog  # type: ignore[attr-defined]
    keys: Iterable[object] = set(shipped_catalog) | set(fresh_catalog)
    return sorted(str(key) for key in keys if key and shipped_catalog.get(key) != fresh_catalog.get(key))
