"""Text extraction (text, Markdown, HTML, PDF, source code) and chunking."""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from bastion._extras import require
from bastion.errors import MemoryStoreError

TEXT_EXT = {".txt", ".text", ".rst", ".log", ".csv", ".tsv", ""}
MARKDOWN_EXT = {".md", ".markdown", ".mdx"}
HTML_EXT = {".html", ".htm", ".xhtml"}
PDF_EXT = {".pdf"}
CODE_EXT = {
    ".py", ".pyi", ".js", ".mjs", ".cjs", ".ts", ".tsx", ".jsx", ".go", ".rs", ".java", ".kt",
    ".c", ".h", ".cc", ".cpp", ".hpp", ".cs", ".rb", ".php", ".swift", ".scala", ".sh", ".bash",
    ".zsh", ".sql", ".lua", ".r", ".pl", ".toml", ".yaml", ".yml", ".json", ".ini", ".cfg",
    ".css", ".scss", ".vue", ".svelte", ".dockerfile", ".mk", ".proto", ".tf", ".ex", ".exs",
}
CODE_NAMES = {"Makefile", "Dockerfile", "CMakeLists.txt", "Justfile"}


def kind_of(name: str) -> str | None:
    """Return the document kind for a file name: text, markdown, html, pdf, code or None."""
    p = Path(name)
    ext = p.suffix.lower()
    if p.name in CODE_NAMES or ext in CODE_EXT:
        return "code"
    if ext in MARKDOWN_EXT:
        return "markdown"
    if ext in HTML_EXT:
        return "html"
    if ext in PDF_EXT:
        return "pdf"
    if ext in TEXT_EXT:
        return "text"
    return None


class _HTMLText(HTMLParser):
    SKIP = {"script", "style", "noscript", "template", "svg", "head"}
    BLOCK = {"p", "div", "br", "li", "tr", "section", "article", "pre", "table", "ul", "ol",
             "blockquote", "header", "footer", "main", "nav", "aside"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.title = ""
        self._skip = 0
        self._in_title = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "title":
            self._in_title = True
        if tag in self.SKIP:
            self._skip += 1
        elif re.fullmatch(r"h[1-6]", tag):
            self.parts.append("\n\n" + "#" * int(tag[1]) + " ")
        elif tag in self.BLOCK:
            self.parts.append("\n\n" if tag != "br" else "\n")

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self._in_title = False
        if tag in self.SKIP and self._skip:
            self._skip -= 1
        elif tag in self.BLOCK or re.fullmatch(r"h[1-6]", tag):
            self.parts.append("\n\n")

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title += data
        if not self._skip:
            self.parts.append(data)


def html_to_text(html: str) -> str:
    """Return the readable text of an HTML page (headings kept as Markdown ``#``)."""
    p = _HTMLText()
    p.feed(html)
    p.close()
    text = "".join(p.parts)
    text = re.sub(r"[ \t\r\f\v]+", " ", text)
    text = re.sub(r" ?\n ?", "\n", text)
    text = re.sub(r"\n{3,}", "\n\n", text).strip()
    title = p.title.strip()
    return f"# {title}\n\n{text}" if title and title not in text[:200] else text


def pdf_to_text(data: bytes) -> str:
    """Return the text of a PDF (pypdf), pages separated by blank lines."""
    pypdf: Any = require("pypdf", extra="memory", feature="PDF ingestion")
    try:
        reader = pypdf.PdfReader(io.BytesIO(data))
        pages = [(page.extract_text() or "").strip() for page in reader.pages]
    except Exception as exc:
        raise MemoryStoreError(f"cannot read the PDF: {exc}") from exc
    return "\n\n".join(p for p in pages if p)


def extract_text(data: bytes, kind: str) -> str:
    """Return the text of a document of ``kind``.

    PDF and HTML are parsed in a child process with memory, CPU and time limits
    (:func:`bastion.security.isolate.run_isolated`): a parser crash, loop or bomb fails
    this one document with a clear error.
    """
    if kind not in ("pdf", "html"):
        if b"\x00" in data[:4096]:
            raise MemoryStoreError("binary content, not text")
        return data.decode("utf-8", errors="replace")
    from bastion.security.isolate import run_isolated

    _, text = run_isolated("bastion.memory._chunk:parse_in_child", data, kind=kind,
                           what=f"{kind.upper()} parser", error=MemoryStoreError)
    return text.decode("utf-8", errors="replace")


def parse_in_child(data: bytes, kind: str) -> tuple[dict[str, Any], bytes]:
    """Parse a PDF or HTML document (runs in the limited child of ``extract_text``)."""
    if kind == "pdf":
        return {}, pdf_to_text(data).encode("utf-8", errors="replace")
    if b"\x00" in data[:4096]:
        raise MemoryStoreError("binary content, not text")
    return {}, html_to_text(data.decode("utf-8", errors="replace")).encode("utf-8",
                                                                         errors="replace")


@dataclass(slots=True, frozen=True)
class Chunk:
    """One piece of a document with where it came from."""

    text: str
    index: int
    where: str  # heading path or line range, for citations


def _span(first: str, last: str) -> str:
    """Merge two locations: "lines 1-4" + "lines 9-12" -> "lines 1-12"."""
    if first.startswith("lines ") and last.startswith("lines ") and first != last:
        return f"{first.split('-')[0]}-{last.split('-')[-1]}"
    return first


def _pack(pieces: list[tuple[str, str]], size: int, overlap: int) -> list[Chunk]:
    """Greedily pack (text, where) pieces into chunks of at most ``size`` chars."""
    chunks: list[Chunk] = []
    buf = ""
    where = last = ""
    for text, loc in pieces:
        while len(text) > size:  # one piece larger than a chunk: hard-split it
            cut = text.rfind("\n", 0, size)  # prefer a line break (code), then a space
            if cut <= size // 2:
                cut = text.rfind(" ", 0, size)
            cut = cut if cut > size // 2 else size
            pieces_head, text = text[:cut], text[cut:].lstrip(" \n")
            if buf:
                chunks.append(Chunk(buf.strip(), len(chunks), _span(where, last)))
                buf = ""
            chunks.append(Chunk(pieces_head.strip(), len(chunks), loc))
        if buf and len(buf) + len(text) + 2 > size:
            chunks.append(Chunk(buf.strip(), len(chunks), _span(where, last)))
            tail = buf[-overlap:] if overlap else ""
            space = tail.find(" ")
            tail = tail[space + 1 :] if 0 <= space < len(tail) - 1 else tail
            buf = (tail + "\n\n" if tail.strip() else "") + text
            where = loc
        else:
            if not buf:
                where = loc
            buf = f"{buf}\n\n{text}" if buf else text
        last = loc
    if buf.strip():
        chunks.append(Chunk(buf.strip(), len(chunks), _span(where, last)))
    return [c for c in chunks if c.text]


def chunk_prose(text: str, size: int, overlap: int, *, markdown: bool = False) -> list[Chunk]:
    """Split prose at paragraphs (and Markdown headings), packing to ``size`` chars."""
    pieces: list[tuple[str, str]] = []
    heads: list[str] = []
    for para in re.split(r"\n\s*\n", text):
        para = para.strip()
        if not para:
            continue
        m = re.match(r"^(#{1,6})\s+(.+)$", para.splitlines()[0]) if markdown else None
        if m:
            level = len(m.group(1))
            heads = [*heads[: level - 1], m.group(2).strip()]
        pieces.append((para, " > ".join(heads)))
    return _pack(pieces, size, overlap)


def chunk_code(text: str, size: int, overlap: int) -> list[Chunk]:
    """Split source code at blank lines between blocks, keeping line ranges for citations."""
    pieces: list[tuple[str, str]] = []
    block: list[str] = []
    start = 1
    for no, line in enumerate(text.splitlines(), 1):
        top_level = line and not line[0].isspace() and block and not block[-1].strip()
        if top_level:
            body = "\n".join(block).strip("\n")
            if body.strip():
                pieces.append((body, f"lines {start}-{no - 1}"))
            block, start = [], no
        block.append(line)
    body = "\n".join(block).strip("\n")
    if body.strip():
        pieces.append((body, f"lines {start}-{start + len(block) - 1}"))
    return _pack(pieces, size, overlap)


def chunk(text: str, kind: str, size: int = 1000, overlap: int = 150) -> list[Chunk]:
    """Chunk a document's text by its kind."""
    if kind == "code":
        return chunk_code(text, size, overlap)
    return chunk_prose(text, size, overlap, markdown=kind in ("markdown", "html"))
