// A copy-to-clipboard button (text only), shared by the chat page and the Markdown renderer.

/** Copy `getText()` to the clipboard; a button labelled `label` (its accessible name). */
export function copyButton(getText, label) {
  const b = document.createElement("button");
  b.type = "button";
  b.className = "copy";
  b.textContent = "Copy";
  b.setAttribute("aria-label", label);
  b.addEventListener("click", async () => {
    const value = getText();
    try {
      await navigator.clipboard.writeText(value);
    } catch (_) { // no clipboard permission: select it the old way
      const area = document.createElement("textarea");
      area.value = value;
      area.setAttribute("aria-hidden", "true");
      document.body.append(area);
      area.select();
      document.execCommand("copy");
      area.remove();
    }
    b.textContent = "Copied";
    setTimeout(() => { b.textContent = "Copy"; }, 1500);
  });
  return b;
}
