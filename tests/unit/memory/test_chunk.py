from __future__ import annotations

from bastion.memory._chunk import chunk, html_to_text, kind_of


def test_kinds() -> None:
    assert kind_of("a.md") == "markdown"
    assert kind_of("page.HTML") == "html"
    assert kind_of("x.pdf") == "pdf"
    assert kind_of("main.rs") == "code"
    assert kind_of("Makefile") == "code"
    assert kind_of("notes.txt") == "text"
    assert kind_of("photo.jpg") is None


def test_html_text_skips_scripts_and_keeps_headings() -> None:
    html = ("<html><head><title>Doc</title><style>p{}</style></head><body>"
            "<script>var secret=1</script><h2>Setup</h2><p>Run &amp; enjoy.</p></body></html>")
    text = html_to_text(html)
    assert "secret" not in text and "p{}" not in text
    assert "## Setup" in text and "Run & enjoy." in text


def test_markdown_chunks_respect_size_and_carry_headings() -> None:
    body = "\n\n".join(f"Paragraph {i} " + "word " * 40 for i in range(20))
    text = f"# Guide\n\n## Install\n\n{body}\n\n## Use\n\nThe final part."
    chunks = chunk(text, "markdown", size=500, overlap=80)
    assert len(chunks) > 5
    assert all(len(c.text) <= 500 + 80 + 2 for c in chunks)
    assert chunks[1].where == "Guide > Install"
    assert "## Use\n\nThe final part." in chunks[-1].text  # heading stays with its text
    # overlap: the start of a chunk repeats the end of the previous one
    assert chunks[2].text[:20] in chunks[1].text


def test_code_chunks_have_line_ranges() -> None:
    src = "\n\n".join(f"def f{i}():\n    return {i}\n" for i in range(60))
    chunks = chunk(src, "code", size=300, overlap=0)
    assert len(chunks) > 3
    assert chunks[0].where.startswith("lines 1-")
    assert all(c.text.startswith("def ") for c in chunks)
    joined = "\n".join(c.text for c in chunks)
    assert all(f"def f{i}()" in joined for i in range(60))
