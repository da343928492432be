// Render the math that pymdownx.arithmatex (generic mode) leaves in the page:
//   inline:  <span class="arithmatex">\( ... \)</span>
//   display: <div class="arithmatex">\[ ... \]</div>
// Uses the vendored KaTeX in assets/katex/ (no network access).
(function () {
  "use strict";

  function render(root) {
    if (typeof renderMathInElement !== "function") {
      return;
    }
    var nodes = (root || document).querySelectorAll(".arithmatex");
    for (var i = 0; i < nodes.length; i++) {
      renderMathInElement(nodes[i], {
        delimiters: [
          { left: "\\(", right: "\\)", display: false },
          { left: "\\[", right: "\\]", display: true }
        ],
        throwOnError: false
      });
    }
  }

  // mkdocs-material exposes `document$`, which also fires after instant navigation.
  if (typeof document$ !== "undefined" && document$ && document$.subscribe) {
    document$.subscribe(function () { render(document); });
  } else if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", function () { render(document); });
  } else {
    render(document);
  }
})();
