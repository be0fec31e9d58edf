"""The Lithuanian catalogue is complete, compiles, and says the same things with the same placeholders."""

from __future__ import annotations

from pathlib import Path

from app.i18n.catalogues import LOCALE_DIR, available_languages, po_path
from app.i18n.scripts import script_catalogue
from tests.i18n.catalogue_checks import (
    LITHUANIAN_PLURALS,
    compiled,
    extracted,
    message_problems,
    problems,
    read,
    same_translations,
)

REPO = Path(__file__).resolve().parents[2]


def test_lithuanian_is_offered() -> None:
    assert available_languages() == ("en", "lt")


def test_every_marked_message_is_in_every_catalogue() -> None:
    marked = extracted(REPO / "app", REPO / "babel.cfg")
    assert len(marked) > 50
    for language in available_languages()[1:]:
        catalogue = read(po_path(language), language)
        missing = sorted(marked - {m.id if isinstance(m.id, str) else m.id[0] for m in catalogue if m.id})
        assert not missing, f"{language}: run `make catalogues` and translate: {missing[:20]}"


def test_lithuanian_is_complete_with_matching_placeholders() -> None:
    catalogue = read(po_path("lt"), "lt")
    assert catalogue.plural_forms.replace(" ", "") == LITHUANIAN_PLURALS.replace(" ", "")
    assert problems(catalogue) == []
    # Compiles, and the three forms land where Lithuanian puts them (1 and 21; 2-9 and 22; 10-20).
    translations = compiled(catalogue)
    plural = translations.plural  # type: ignore[attr-defined]  # made from the catalogue's Plural-Forms
    assert [plural(n) for n in (1, 3, 10, 11, 12, 21, 22, 100, 101)] == [0, 1, 2, 2, 2, 0, 1, 2, 0]
    assert translations.gettext("Log in") == "Prisijungti"


def test_compiled_catalogues_are_in_step_with_their_sources() -> None:
    for language in available_languages()[1:]:
        mo_file = LOCALE_DIR / language / "LC_MESSAGES" / "messages.mo"
        assert mo_file.exists(), "run `make catalogues`"
        assert same_translations(mo_file, read(po_path(language), language)) == []


def test_the_check_finds_a_broken_translation() -> None:
    from babel.messages.catalog import Message

    assert message_problems(Message("Start {name}", "Paleisti {vardas}"), 3)
    assert message_problems(Message("%(count)d VMs", "%(kiekis)d VM"), 3)
    assert message_problems(Message("Start", ""), 3)
    assert message_problems(Message(("{n} VM", "{n} VMs"), ("{n} VM", "{n} VM")), 3)
    assert message_problems(Message("Start", "Paleisti", flags=["fuzzy"]), 3)
    assert not message_problems(Message("Start {name}", "Paleisti {name}"), 3)


def test_scripts_get_their_messages_and_the_plural_rule() -> None:
    catalogue = script_catalogue("lt")
    body = catalogue.body.decode()
    assert body.startswith("window.KVMVDI_I18N = ")
    assert '"language": "lt"' in body
    assert "n%10==1" in body.replace(" ", "")
    assert catalogue.url == f"/static/i18n/lt.js?v={catalogue.digest}"
    english = script_catalogue("en").body.decode()
    assert '"messages": {}' in english


LAUNCHER = REPO / "thin_client" / "kvm_vdi_client"
LAUNCHER_PO = LAUNCHER / "locale" / "lt" / "LC_MESSAGES" / "kvm_vdi_client.po"


def test_the_launchers_lithuanian_catalogue_is_complete_compiled_and_in_step() -> None:
    catalogue = read(LAUNCHER_PO, "lt")
    assert catalogue.plural_forms.replace(" ", "") == LITHUANIAN_PLURALS.replace(" ", "")
    marked = extracted(LAUNCHER, None)
    assert len(marked) > 20
    missing = sorted(marked - {m.id if isinstance(m.id, str) else m.id[0] for m in catalogue if m.id})
    assert not missing, f"run `make catalogues` and translate: {missing[:20]}"
    assert problems(catalogue) == []
    assert same_translations(LAUNCHER_PO.with_suffix(".mo"), catalogue) == []
