from bastion.cli._terminal import visible


def test_controls_become_visible_escapes() -> None:
    assert visible("a\x1b[2Kb") == "a\\x1b[2Kb"
    assert visible("\x1b]52;c;eA==\x07") == "\\x1b]52;c;eA==\\x07"
    assert visible("over\rwrite") == "over\\x0dwrite"
    assert visible("csi\x9b2J del\x7f") == "csi\\x9b2J del\\x7f"
    assert visible("user\u202eexe.txt") == "user\\u202eexe.txt"  # bidi override


def test_text_newlines_tabs_and_unicode_are_kept() -> None:
    text = "línea 1\n\tcafé ☕ — ok"
    assert visible(text) == text
