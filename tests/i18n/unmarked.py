"""Finds words a person would read that are not marked for translation.

Templates: text between tags and the readable attributes (title, placeholder, aria-label,
alt, label, data-confirm ...) outside ``{% trans %}`` blocks, and prose-like string literals
in Jinja code outside ``_()``/``gettext``/``ngettext``. Scripts: prose-like string literals
and template literals outside ``gettext``/``ngettext`` calls. Python: prose-like string
literals given to responses, toasts, errors and refusals (``message``/``title`` keys,
``json_error``, ``redirect_with_toast``, ``...Error(...)``) outside ``_()``/``gettext``.

"Prose-like": a capitalised word or several words; identifiers, CSS classes, URLs, icon
names and the like are not. What is meant to stay as it is (the product name, units,
protocol names) is in ALLOWED.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote_plus

from babel.messages.jslexer import tokenize as js_tokenize
from jinja2 import Environment
from jinja2.lexer import Token

REPO = Path(__file__).resolve().parents[2]
MARKERS = {"_", "gettext", "ngettext", "pgettext", "npgettext", "N_", "lazy_gettext", "M_", "Mn_"}
READABLE_ATTRIBUTES = {"title", "placeholder", "aria-label", "alt", "label", "data-confirm", "data-bs-title"}
LITERAL_ELEMENTS = {"code", "pre", "kbd", "samp", "script", "style", "var"}
# Words that stay as they are in every language.
ALLOWED = {
    "KVM-VDI",
    "SPICE",
    "RDP",
    "VNC",
    "UEFI",
    "BIOS",
    "TPM",
    "KVM",
    "TCG",
    "QEMU",
    "OVMF",
    "LDAP",
    "CSV",
    "JSON",
    "ISO",
    "vCPU",
    "MiB",
    "GiB",
    "IPv4",
    "IPv6",
    "MAC",
    "URL",
    "SSH",
    "X-CSRF-Token",
    "Content-Type",
    "Accept",
    "OK",
    "English",
    "Lietuvių",
    "remote-viewer",
    "use strict",
}
WORD = re.compile(r"[^\W\d_]{2,}")
CAPITALISED = re.compile(r"(?<![\w./#-])[A-Z][a-z]{2,}\b")
SENTENCE = re.compile(r"[^\W\d_]{2,} [^\W\d_]{2,}")


@dataclass(frozen=True)
class Finding:
    path: str
    line: int
    text: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.text!r}"


# Key names are printed on the keys in every language ("Ctrl+Alt+Del").
KEY_COMBINATION = re.compile(r"(?:(?:Ctrl|Alt|Shift|Del|Esc|Tab|Backspace|F\d*|\x00)\+?)+")


def readable(text: str) -> bool:
    """Text shown as it is (a text node, a title): any word not allowed to stay untranslated."""
    text = " ".join(text.split())
    if not text or text in ALLOWED or KEY_COMBINATION.fullmatch(text):
        return False
    words = [w for w in WORD.findall(text) if w not in ALLOWED]
    return any(w for w in words if not re.fullmatch(r"[A-Z]{2,5}s?", w))


def prose(literal: str) -> bool:
    """A string literal in code that reads as words to a person (not a key, class or path)."""
    text = re.sub(r"<[^>]*>", " ", literal).strip()  # the words of an HTML snippet
    if not text or text in ALLOWED or "://" in text or text.startswith(("/", "#", ".", "[", "bi-")):
        return False
    if re.fullmatch(r"[\w.:/#\[\]=\"'-]+", text) and not CAPITALISED.search(text):
        return False
    tokens = text.split()
    if any(re.fullmatch(r"[\w-]+=[\w\"'-]*", t) for t in tokens):
        return False  # HTML attributes ("required maxlength=64")
    if all(re.fullmatch(r"[a-z0-9-]+", t) for t in tokens) and any("-" in t for t in tokens):
        return False  # a list of CSS classes
    return bool(CAPITALISED.search(text) or SENTENCE.search(text)) and readable(text)


def relative(path: Path) -> str:
    resolved = path.resolve()
    return str(resolved.relative_to(REPO)) if resolved.is_relative_to(REPO) else str(path)


# --- templates -------------------------------------------------------------------------------


class _TextCollector(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.found: list[tuple[int, str]] = []
        self.literal_depth = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in LITERAL_ELEMENTS:
            self.literal_depth += 1
        attributes = dict(attrs)
        readable_names = set(READABLE_ATTRIBUTES)
        if tag == "input" and attributes.get("type") in ("submit", "button", "reset"):
            readable_names.add("value")
        for name, value in attrs:
            if value and name in readable_names and readable(value.replace("\x00", " ")):
                self.found.append((self.getpos()[0], f"{name}={value.strip()}"))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
        if tag in LITERAL_ELEMENTS:
            self.literal_depth -= 1

    def handle_endtag(self, tag: str) -> None:
        if tag in LITERAL_ELEMENTS and self.literal_depth:
            self.literal_depth -= 1

    def handle_data(self, data: str) -> None:
        if not self.literal_depth and readable(data.replace("\x00", " ")):
            self.found.append((self.getpos()[0], data.strip()))


_ENV = Environment(extensions=["jinja2.ext.i18n"], autoescape=True)


def _template_code_strings(tokens: list[Token]) -> Iterator[tuple[int, str]]:
    """String literals in Jinja code outside translation calls (``_("…")`` is fine)."""
    frames: list[bool] = []  # one per open parenthesis: inside a translation call?
    previous: Token | None = None
    for token in tokens:
        if token.type == "lparen":
            frames.append(previous is not None and previous.type == "name" and previous.value in MARKERS)
        elif token.type == "rparen" and frames:
            frames.pop()
        elif token.type == "string" and not any(frames) and prose(token.value):
            yield token.lineno, token.value
        if token.type in ("block_end", "variable_end"):
            frames.clear()
        previous = token


def scan_template(path: Path) -> list[Finding]:
    source = path.read_text()
    tokens = list(_ENV.lex(source, filename=str(path)))
    findings: list[Finding] = []
    # The page with Jinja code replaced by a NUL (no words) and trans blocks left out.
    parts: list[str] = []
    in_trans = False
    in_class_block = False
    block: list[str] = []
    for _lineno, kind, value in tokens:
        if kind == "block_begin":
            block = []
        elif (
            kind == "name"
            and len(block) < 2
            and (block or value in ("trans", "endtrans", "block", "endblock"))
        ):
            block.append(value)
            if value == "trans":
                in_trans = True
            elif value == "endtrans":
                in_trans = False
            elif block[0] == "block" and len(block) == 2:
                # {% block body_class %}: CSS classes, not words.
                in_class_block = value.endswith("_class")
            elif value == "endblock":
                in_class_block = False
        if kind == "data":
            # Keep line numbers right for the HTML parser.
            parts.append("\n" * value.count("\n") if in_trans or in_class_block else value)
        elif kind in ("variable_begin", "block_begin"):
            parts.append("\x00")
    parser = _TextCollector()
    parser.feed("".join(parts))
    parser.close()
    rel = relative(path)
    findings += [Finding(rel, line, text) for line, text in parser.found]
    stream = [Token(lineno, kind, value) for lineno, kind, value in _ENV.lexer.tokeniter(source, None)]
    code = list(_ENV.lexer.wrap(iter(stream)))
    findings += [Finding(rel, line, text) for line, text in _template_code_strings(code)]
    return findings


# --- scripts ---------------------------------------------------------------------------------

# Calls whose string arguments never reach a person.
JS_QUIET_CALLS = {
    "querySelector",
    "querySelectorAll",
    "getElementById",
    "addEventListener",
    "removeEventListener",
    "getAttribute",
    "removeAttribute",
    "log",
    "debug",
    "warn",
    "error",
    "info",
    "fetch",
    "closest",
    "matches",
    "add",
    "remove",
    "toggle",
    "contains",
    "createElement",
    "on",
    "get",
    "has",
    "set",
    "delete",
    "postJSON",
    "sendJSON",
}


def _js_literal_value(token_value: str) -> str:
    body = token_value[1:-1]
    return re.sub(r"\$\{[^}]*\}", "${}", body)


def _template_words(text: str) -> bool:
    """A template literal with a word around its placeholders (`${kind} finished`)."""
    plain = " ".join(text.replace("${}", "x").split())
    if " " not in plain or plain.startswith(("<", "/", "#", ".")) or "://" in plain:
        return False
    if all(re.fullmatch(r"[a-z0-9-]+", t) for t in plain.split()) and "-" in plain:
        return False  # CSS classes
    return readable(plain.replace(" x ", " ").removeprefix("x ").removesuffix(" x"))


def scan_script(path: Path) -> list[Finding]:
    source = path.read_text()
    findings: list[Finding] = []
    frames: list[str] = []  # one per open parenthesis: "mark", "quiet" or ""
    previous = None
    before_previous = None
    # A line may say its strings are never shown ("// i18n-ignore: why").
    ignored = {number for number, line in enumerate(source.splitlines(), 1) if "i18n-ignore" in line}
    for token in js_tokenize(source, dotted=False, template_string=True):
        if token.type == "operator" and token.value == "(":
            name = previous.value if previous is not None and previous.type == "name" else ""
            frames.append("mark" if name in MARKERS else "quiet" if name in JS_QUIET_CALLS else "")
        elif token.type == "operator" and token.value == "{":
            # A function body inside a quiet call's arguments speaks again.
            frames.append("")
        elif token.type == "operator" and token.value in (")", "}") and frames:
            frames.pop()
        elif token.type in ("string", "template_string") and "mark" not in frames:
            quiet_call = bool(frames) and frames[-1] == "quiet"
            text = _js_literal_value(token.value)
            readable_text = prose(text.replace("${}", "x")) or (
                token.type == "template_string" and _template_words(text)
            )
            if not quiet_call and readable_text and token.lineno not in ignored:
                findings.append(Finding(relative(path), token.lineno, " ".join(text.split())))
        if token.type not in ("linecomment", "multilinecomment"):
            before_previous, previous = previous, token
    del before_previous
    return findings


# --- Python ----------------------------------------------------------------------------------

# Calls whose text reaches a person: responses, toasts, errors and refusals.
PY_SPEAKING_CALLS = {
    "print",
    "json_error",
    "error_response",
    "error",
    "redirect_with_toast",
    "PlainTextResponse",
    "HTTPException",
    "Refusal",
    "Refused",
    "Invalid",
    "BodyError",
}
# Calls whose text is kept and shown later to many readers (an operation's progress, stored and
# broadcast to every admin): only a kept message (M_/Mn_) will do, and text translated at once
# (``_()``) would stay in the writer's language.
PY_KEPT_CALLS = {"progress", "advance"}
TRANSLATED_AT_ONCE = {"_", "gettext", "ngettext", "pgettext", "npgettext"}
PY_SPEAKING_KEYS = {"message", "title", "detail", "reason", "toast", "error", "text", "help"}
# Variables holding text shown later: ``messages = {code: text}``, ``errors[field] = text``.
PY_SPEAKING_NAMES = {"message", "messages", "error", "errors", "toast"}
# The launcher (thin_client/) speaks through its state machine and Tk widgets too: the one-line
# ``notice`` and progress ``status`` of a screen (keywords or ``self.notice = …``), a widget's
# ``text=``, a window's ``root.title("…")`` and a command-line option's ``help=``.
LAUNCHER_SPEAKING_KEYS = {"notice", "status", "text", "help"}
LAUNCHER_SPEAKING_NAMES = {"notice", "status"}
LAUNCHER_SPEAKING_CALLS = {"title"}
# Redirects whose URL may carry a ``?toast=`` text.
PY_REDIRECTS = {"RedirectResponse", "redirect"}
# Exceptions that are programming errors or start-up failures, read by developers.
PY_QUIET_EXCEPTIONS = {
    "ValueError",
    "RuntimeError",
    "TypeError",
    "KeyError",
    "AssertionError",
    "LookupError",
    "OSError",
}
# Helpers named like error helpers that only log.
PY_QUIET_HELPERS = {"log_failure"}
# Logs stay English; a websocket's close reason is read by scripts (they show their own words by code).
LOGGERS = {"log", "logger", "logging"}
PY_QUIET_CALLS = {"debug", "info", "warning", "error_log", "exception", "critical", "log", "close"}


def _call_name(node: ast.Call) -> str:
    func = node.func
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        return func.attr
    return ""


def _literal_text(node: ast.AST) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(
            part.value if isinstance(part, ast.Constant) and isinstance(part.value, str) else "{}"
            for part in node.values
        )
    return None


class _PythonScanner(ast.NodeVisitor):
    def __init__(self, rel: str, *, launcher: bool) -> None:
        self.rel = rel
        self.found: list[Finding] = []
        self.speaking_keys = PY_SPEAKING_KEYS | (LAUNCHER_SPEAKING_KEYS if launcher else set())
        self.speaking_names = PY_SPEAKING_NAMES | (LAUNCHER_SPEAKING_NAMES if launcher else set())
        self.speaking_calls = PY_SPEAKING_CALLS | (LAUNCHER_SPEAKING_CALLS if launcher else set())

    def _check(self, node: ast.AST) -> None:
        if isinstance(node, ast.Dict):
            # {field: message} (a form's errors) or {code: message} (refusals by code).
            for value in node.values:
                self._check(value)
            return
        for child in ast.walk(node):
            if isinstance(child, ast.Call) and _call_name(child) in MARKERS:
                return
        text = _literal_text(node)
        if text is not None and prose(text):
            self.found.append(Finding(self.rel, getattr(node, "lineno", 0), text.strip()))
        elif isinstance(node, ast.BinOp | ast.IfExp | ast.BoolOp | ast.List | ast.Tuple):
            for child in ast.iter_child_nodes(node):
                self._check(child)

    def _check_kept(self, node: ast.AST) -> None:
        """Text kept to be shown later: unmarked, or translated at once into one language."""
        at_once = [
            child
            for child in ast.walk(node)
            if isinstance(child, ast.Call) and _call_name(child) in TRANSLATED_AT_ONCE and child.args
        ]
        if at_once:
            text = _literal_text(at_once[0].args[0]) or ""
            self.found.append(Finding(self.rel, getattr(node, "lineno", 0), f"translated at once: {text}"))
            return
        self._check(node)

    def _check_toast_url(self, node: ast.AST) -> None:
        """The ``?toast=`` text of a redirect written into its URL."""
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            parts: list[ast.AST] = [node]
        elif isinstance(node, ast.JoinedStr):
            parts = list(node.values)
        else:
            return
        after_toast = False
        for part in parts:
            if isinstance(part, ast.Constant) and isinstance(part.value, str):
                text = part.value
                if "toast=" in text:
                    after_toast = True
                    text = text.split("toast=", 1)[1]
                elif not after_toast:
                    continue
                words = unquote_plus(re.split(r"[&#]", text, maxsplit=1)[0])
                if prose(words):
                    self.found.append(Finding(self.rel, getattr(node, "lineno", 0), words.strip()))
                if re.search(r"[&#]", text):
                    after_toast = False
            elif after_toast and isinstance(part, ast.FormattedValue):
                inner = part.value
                if isinstance(inner, ast.Call) and _call_name(inner) in ("quote", "quote_plus"):
                    for arg in inner.args:
                        self._check(arg)

    def visit_Call(self, node: ast.Call) -> None:
        name = _call_name(node)
        if name in MARKERS:
            return
        func = node.func
        if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) and func.value.id in LOGGERS:
            self.generic_visit(node)
            return
        speaking = (
            name in self.speaking_calls
            or "refuse" in name.lower()
            # Helpers (not exception classes) that answer an error: ``_invalid_json("…")``.
            or (
                not name[:1].isupper()
                and name not in PY_QUIET_HELPERS
                and any(word in name.lower() for word in ("invalid", "error", "fail"))
            )
            or (
                (
                    name.endswith(("Error", "Refused", "Refusal", "Failure"))
                    or (name[:1].isupper() and "Error" in name)
                )
                and name not in PY_QUIET_EXCEPTIONS
            )
        )
        if speaking and name not in PY_QUIET_CALLS:
            for arg in node.args:
                self._check(arg)
        if name in PY_KEPT_CALLS:
            for arg in node.args:
                self._check_kept(arg)
        if name in PY_REDIRECTS and node.args:
            self._check_toast_url(node.args[0])
        for keyword in node.keywords:
            if keyword.arg in self.speaking_keys and name not in PY_QUIET_CALLS:
                self._check(keyword.value)
        self.generic_visit(node)

    def visit_Assign(self, node: ast.Assign) -> None:
        # messages = {...}; errors["name"] = "...": text kept aside to be shown later.
        for target in node.targets:
            if isinstance(target, ast.Subscript):
                target = target.value
            if isinstance(target, ast.Attribute):
                target = ast.Name(target.attr)
            if isinstance(target, ast.Name) and target.id.strip("_").lower() in self.speaking_names:
                self._check(node.value)
                break
        self.generic_visit(node)

    def visit_Dict(self, node: ast.Dict) -> None:
        for key, value in zip(node.keys, node.values, strict=True):
            if isinstance(key, ast.Constant) and key.value in self.speaking_keys:
                self._check(value)
        self.generic_visit(node)


def scan_python(path: Path, *, launcher: bool | None = None) -> list[Finding]:
    """``launcher``: apply the launcher's rules too (by default, for files under ``thin_client/``)."""
    source = path.read_text()
    if "# i18n-ignore-file" in source:
        return []
    rel = relative(path)
    scanner = _PythonScanner(rel, launcher=rel.startswith("thin_client/") if launcher is None else launcher)
    scanner.visit(ast.parse(source, filename=str(path)))
    # A line may say its text is never read by a person ("# i18n-ignore: why").
    lines = source.splitlines()
    return [f for f in scanner.found if "i18n-ignore" not in lines[f.line - 1]]


def scan(paths: Iterable[Path]) -> list[Finding]:
    findings: list[Finding] = []
    for path in paths:
        if path.suffix == ".html":
            findings += scan_template(path)
        elif path.suffix == ".js":
            findings += scan_script(path)
        elif path.suffix == ".py":
            findings += scan_python(path)
    return findings
