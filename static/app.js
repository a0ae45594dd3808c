// Small enhancements on top of HTMX. Everything works without this file.
(function () {
  "use strict";

  // Swap 4xx answers too (they carry readable errors), but mark them failed so the composer keeps its text.
  document.addEventListener("DOMContentLoaded", function () {
    htmx.config.responseHandling = [
      { code: "204", swap: false },
      { code: "[23]..", swap: true },
      { code: "4..", swap: true, error: true },
      { code: "...", swap: false, error: true },
    ];
    scrollToBottom(true);
    decorate(document);
  });

  function composer() { return document.getElementById("composer"); }
  function messages() { return document.getElementById("messages"); }
  function showError(text) {
    var box = document.getElementById("composer-error");
    if (box) box.innerHTML = "<p class=\"error\"></p>", box.firstChild.textContent = text;
  }

  // Enter sends, Shift+Enter makes a new line. While an answer streams, Enter does nothing.
  document.addEventListener("keydown", function (event) {
    if (event.target.id !== "content" || event.key !== "Enter" || event.shiftKey || event.isComposing) return;
    event.preventDefault();
    if (document.querySelector("#composer-actions .stop")) return;
    if (event.target.value.trim()) composer().requestSubmit();
  });

  // After a successful send: clear the box and any old error. On failure the text stays.
  document.addEventListener("htmx:afterRequest", function (event) {
    var form = composer();
    if (event.detail.elt !== form) return;
    if (event.detail.successful) {
      form.reset();
      form.querySelector("textarea").value = "";
      showError("");
    }
  });
  document.addEventListener("htmx:sendError", function () {
    showError("Could not reach the server. Your message is still in the box; try again.");
  });
  document.addEventListener("htmx:responseError", function (event) {
    if (event.detail.xhr.status >= 500) showError("The server had a problem (" + event.detail.xhr.status + "). Try again.");
  });

  // Follow the answer as it grows, unless the reader scrolled up.
  var pinned = true;
  document.addEventListener("scroll", function (event) {
    var list = messages();
    if (list && event.target === list) pinned = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
  }, true);
  function scrollToBottom(force) {
    var list = messages();
    if (list && (pinned || force)) list.scrollTop = list.scrollHeight;
  }
  document.addEventListener("htmx:sseMessage", function () { scrollToBottom(false); });
  document.addEventListener("htmx:afterSwap", function (event) {
    if (event.detail.target === messages()) scrollToBottom(true);
  });
  document.addEventListener("htmx:afterSettle", function (event) { decorate(event.detail.elt); });
  document.addEventListener("htmx:load", function (event) { decorate(event.detail.elt); });

  // A copy button on every code block.
  function decorate(root) {
    if (!root || !root.querySelectorAll) return;
    root.querySelectorAll(".content.md pre").forEach(function (pre) {
      if (pre.querySelector(".copy")) return;
      var button = document.createElement("button");
      button.type = "button";
      button.className = "copy";
      button.textContent = "Copy";
      button.addEventListener("click", function () {
        var code = pre.querySelector("code");
        navigator.clipboard.writeText(code ? code.innerText : pre.innerText).then(function () {
          button.textContent = "Copied";
          setTimeout(function () { button.textContent = "Copy"; }, 1500);
        });
      });
      pre.appendChild(button);
    });
  }
})();
