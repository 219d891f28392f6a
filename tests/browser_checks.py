"""Checks every page gets in the browser tests: policy violations recorded, and accessibility basics.

Use: ``page.add_init_script(RECORD_CSP_VIOLATIONS)`` before ``page.goto``, then
``assert_clean(page)`` once the page has loaded.
"""

from __future__ import annotations

from typing import Any

# Runs before the page's own code: records every Content-Security-Policy violation.
RECORD_CSP_VIOLATIONS = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", (event) => {
  window.__cspViolations.push(`${event.violatedDirective} blocked ${event.blockedURI || "inline code"}`);
});
"""

# A few checks of our own, no third-party library: lang, alt texts, labels, one h1,
# heading levels that never skip, a main landmark, text contrast as rendered, no sideways scrolling.
ACCESSIBILITY_PROBLEMS = """
() => {
  const problems = [];
  if (!document.documentElement.lang) problems.push("<html> has no lang");
  if (document.querySelectorAll("main").length !== 1) problems.push("not exactly one <main>");
  for (const img of document.querySelectorAll("img")) {
    if (!img.hasAttribute("alt")) problems.push(`image without alt: ${img.src}`);
  }
  for (const field of document.querySelectorAll("input, select, textarea")) {
    if (field.type === "hidden") continue;
    const named = field.labels.length || field.getAttribute("aria-label") || field.getAttribute("aria-labelledby");
    if (!named) problems.push(`field without a label: ${field.name || field.id}`);
  }
  const levels = [...document.querySelectorAll("h1, h2, h3, h4, h5, h6")].map((h) => Number(h.tagName[1]));
  if (levels.filter((level) => level === 1).length !== 1) problems.push("not exactly one h1");
  levels.reduce((previous, level) => {
    if (level > previous + 1) problems.push(`heading jumps from h${previous} to h${level}`);
    return level;
  }, 0);
  const rgb = (value) => value.match(/[0-9.]+/g).map(Number);
  const luminance = ([r, g, b]) => {
    const linear = [r, g, b].map((c) => c / 255).map((c) => (c <= 0.04045 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4));
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2];
  };
  const background = (element) => {
    for (let node = element; node; node = node.parentElement) {
      const colour = rgb(getComputedStyle(node).backgroundColor);
      if (colour.length < 4 || colour[3] > 0) return colour.slice(0, 3);
    }
    return [255, 255, 255];
  };
  for (const element of document.body.querySelectorAll("*")) {
    const text = [...element.childNodes].some((node) => node.nodeType === 3 && node.textContent.trim());
    if (!text) continue;
    const [light, dark] = [luminance(rgb(getComputedStyle(element).color)), luminance(background(element))]
      .sort((a, b) => b - a);
    const ratio = (light + 0.05) / (dark + 0.05);
    if (ratio < 4.5) problems.push(`contrast ${ratio.toFixed(2)} for "${element.textContent.trim().slice(0, 40)}"`);
  }
  if (document.documentElement.scrollWidth > window.innerWidth) problems.push("the page scrolls sideways");
  return problems;
}
"""


def assert_clean(page: Any) -> None:
    """No console errors, no Content-Security-Policy violations, no accessibility problems."""
    assert page.console_errors == []
    assert page.evaluate("window.__cspViolations") == []
    assert page.evaluate(ACCESSIBILITY_PROBLEMS) == []
