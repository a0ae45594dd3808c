// Enhancements on top of HTMX. Everything works without this file: every action is a plain form.
(function () {
  "use strict";

  var finePointer = window.matchMedia("(hover: hover) and (pointer: fine)");
  var phone = window.matchMedia("(max-width: 700px)");

  function byId(id) { return document.getElementById(id); }
  function composer() { return byId("composer"); }
  function messages() { return byId("messages"); }
  function textbox() { return byId("content"); }
  function shown(element) { return !!element && element.isConnected && element.getClientRects().length > 0; }

  document.addEventListener("DOMContentLoaded", function () {
    // Swap 4xx answers too (they carry readable errors), but mark them failed so the composer keeps its text.
    htmx.config.responseHandling = [
      { code: "204", swap: false },
      { code: "[23]..", swap: true },
      { code: "4..", swap: true, error: true },
      { code: "...", swap: false, error: true },
    ];
    // Settle at once: new content is live (its hx- attributes processed) by the time focus is put on it.
    htmx.config.defaultSettleDelay = 0;
    pageChanged();
    new MutationObserver(afterMutations).observe(document.body, { childList: true, subtree: true });
  });

  // ---- The one live region: "Answer started", "Answer finished", "Answer stopped", or the error ----------
  var announcer = null, streaming = {}, lastError = "", newestId = 0;
  function idOf(article) { return parseInt(article.id.replace(/\D+/g, ""), 10) || 0; }
  function announce(text) {
    var region = byId("announcer");
    if (!region || !text) return;
    region.textContent = "";
    setTimeout(function () { region.textContent = text; }, 60);  // a fresh change, even for the same words
  }
  function endOf(article) {
    var status = article.dataset.status;
    if (status === "complete") return "Answer finished";
    if (status === "stopped") return "Answer stopped";
    var state = article.querySelector(".state");
    return state ? state.textContent.replace(/\s+/g, " ").trim() : "The answer ended with an error";
  }
  function noticeAnswers(root) {
    var found = root.matches("article.message") ? [root] : root.querySelectorAll("article.message");
    Array.prototype.forEach.call(found, function (article) {
      var fresh = idOf(article) > newestId;  // new on this page (older ids are other versions coming into view)
      newestId = Math.max(newestId, idOf(article));
      if (!article.classList.contains("assistant")) return;
      if (article.dataset.status === "streaming") {
        if (!streaming[article.id]) announce("Answer started");
        streaming[article.id] = true;
      } else if (streaming[article.id] || fresh) {  // it ended, or began and ended before it got here
        delete streaming[article.id];
        announce(endOf(article));
        refreshMeter();  // the conversation grew (and its cost)
      }
    });
  }
  function noticeErrors() {
    var box = byId("composer-error"), text = box ? box.textContent.replace(/\s+/g, " ").trim() : "";
    if (text !== lastError) {
      lastError = text;
      if (text) announce(text);
      var field = textbox();
      if (field) text ? field.setAttribute("aria-invalid", "true") : field.removeAttribute("aria-invalid");
    }
  }

  // A whole new page (load or boosted navigation): remember its answers without announcing them, unless
  // the page is the answer to the composer (a new chat): then say how its answer stands.
  var composerSent = false;
  function pageChanged() {
    announcer = byId("announcer");
    streaming = {};
    document.querySelectorAll('article.assistant[data-status="streaming"]').forEach(function (a) { streaming[a.id] = true; });
    newestId = 0;
    document.querySelectorAll("article.message").forEach(function (a) { newestId = Math.max(newestId, idOf(a)); });
    var answers = document.querySelectorAll("article.assistant"), newest = answers[answers.length - 1];
    if (composerSent && newest) announce(newest.dataset.status === "streaming" ? "Answer started" : endOf(newest));
    composerSent = false;
    lastError = byId("composer-error") ? byId("composer-error").textContent.replace(/\s+/g, " ").trim() : "";
    decorate(document);
    showMic();
    autosize(textbox());
    scrollToEnd(true);
  }

  function afterMutations(records) {
    if (byId("announcer") !== announcer) { pageChanged(); restoreFocus(); return; }
    records.forEach(function (record) {
      record.addedNodes.forEach(function (node) {
        if (node.nodeType !== 1) return;
        noticeAnswers(node);
        if (node.querySelector && (node.matches(".content, article") || node.querySelector("pre"))) decorate(node);
        if (node.querySelector && node.matches("article.message.editing")) {
          var error = node.querySelector(".error");
          if (error) announce(error.textContent.trim());
        }
      });
    });
    noticeErrors();
    restoreFocus();
    if (records.some(function (r) { return r.target.closest && r.target.closest("#messages"); })) scrollToEnd(false);
  }

  // ---- Focus: after a swap it goes where the next action is, never to <body> ------------------------------
  // Before a request: where focus should land once it is answered. After any swap that removed the
  // focused element: that place, else the same element again (same id), else the message box.
  var lastFocused = null, plan = null;
  document.addEventListener("focusin", function (event) { lastFocused = event.target; });

  document.addEventListener("htmx:beforeRequest", function (event) {
    var elt = event.detail.elt, action = elt.getAttribute("hx-post") || elt.getAttribute("hx-get") || "";
    var article = elt.closest && elt.closest("article.message");
    plan = null;
    if (elt === composer() && event.detail.requestConfig && event.detail.requestConfig.boosted) composerSent = true;
    if (/\/stop$/.test(action)) {
      plan = { selector: "#message-" + action.match(/messages\/(\d+)\//)[1] };
    } else if (/\/(retry|continue|edit)$/.test(action) && elt.tagName === "FORM") {
      plan = { answer: true, selector: article ? "#" + article.id + " textarea" : null };
    } else if (/\/show$/.test(action)) {
      var list = Array.prototype.slice.call(messages().querySelectorAll("article.message"));
      plan = { index: list.indexOf(article), label: elt.querySelector("button").getAttribute("aria-label") };
    } else if (elt.matches("a.edit")) {
      plan = { selector: "#" + article.id + " textarea" };
    } else if (elt.matches("a.cancel")) {
      plan = { selector: "#" + article.id + " .edit" };
    }
    if (plan) plan.source = elt;
  });
  // The request's own swap has settled: focus its place if nothing has focus, then forget the plan.
  // (Swaps from the answer's event stream settle too; they carry no request and leave the plan alone.)
  document.addEventListener("htmx:afterSettle", function (event) {
    if (!plan || !event.detail.requestConfig || event.detail.requestConfig.elt !== plan.source) return;
    var active = document.activeElement;
    if (!active || active === document.body) restoreFocus(true);
    plan = null;
  });
  document.addEventListener("htmx:afterRequest", function (event) {
    if (plan && event.detail.elt === plan.source && !event.detail.successful && event.detail.xhr.status >= 500) plan = null;
  });
  document.addEventListener("htmx:sendError", function () { plan = null; });

  function planned() {
    if (!plan) return null;
    if (plan.answer) {  // the answer being written, or the newest one if it has already ended
      var answer = document.querySelector('#messages article.assistant[data-status="streaming"]');
      if (answer) return answer;
      var answers = Array.prototype.slice.call(document.querySelectorAll("#messages article.assistant"));
      answers.sort(function (a, b) { return idOf(b) - idOf(a); });
      if (answers[0] && (!plan.selector || !document.querySelector(plan.selector))) return answers[0];
    }
    if (plan.label) {
      var article = messages().querySelectorAll("article.message")[plan.index];
      return article && article.querySelector('.version[aria-label="' + plan.label + '"]');
    }
    return plan.selector ? document.querySelector(plan.selector) : null;
  }

  function restoreFocus(force) {
    var active = document.activeElement;
    if (active && active !== document.body) return;
    if (!force && !(lastFocused && !lastFocused.isConnected)) return;
    var lost = lastFocused, target = planned();
    if (target) plan = null;
    if (!target && lost && lost.id) target = byId(lost.id);
    if (!target && lost && lost.matches(".send")) target = textbox();  // sent: back to writing (Stop is a Tab away)
    if (!target && lost && lost.closest("#composer-actions")) target = document.querySelector("#composer-actions button");
    if (!target && lost) {
      var article = lost.closest("article.message"), key = keyOf(lost);
      var again = article && byId(article.id);
      if (again) target = (key && again.querySelector(key)) || again;
    }
    if (!shown(target)) target = shown(textbox()) ? textbox() : messages() || byId("main");
    if (target) focusOn(target);
  }
  function keyOf(element) {
    if (element.matches(".version")) return '.version[aria-label="' + element.getAttribute("aria-label") + '"]';
    var names = ["edit", "retry", "continue", "copy-message", "thumb-up", "thumb-down"];
    for (var i = 0; i < names.length; i++) if (element.classList.contains(names[i])) return "." + names[i];
    return null;
  }
  function focusOn(element) {
    if (element.tagName === "ARTICLE" || element === messages()) {
      if (!element.hasAttribute("tabindex")) element.setAttribute("tabindex", "-1");
      element.focus({ preventScroll: true });
      return;
    }
    element.focus();
    if (element.tagName === "TEXTAREA") element.setSelectionRange(element.value.length, element.value.length);
  }

  // ---- Keys --------------------------------------------------------------------------------------------
  document.addEventListener("keydown", function (event) {
    var target = event.target;
    // Enter sends and Shift+Enter makes a new line (with a keyboard and pointer; on touch screens Enter is a new line).
    if (target.id === "content" && event.key === "Enter" && !event.shiftKey && !event.isComposing && finePointer.matches) {
      event.preventDefault();
      if (document.querySelector("#composer-actions .stop")) return;  // an answer is being written
      if (target.value.trim() || (byId("images") && byId("images").files.length)) composer().requestSubmit();
      return;
    }
    if (event.key !== "Escape") return;
    var editing = target.closest && target.closest("article.editing");
    if (editing) { event.preventDefault(); editing.querySelector("a.cancel").click(); return; }
    var menu = target.closest && target.closest("details.menu[open]");
    if (menu) { menu.open = false; menu.querySelector("summary").focus(); return; }
    if (byId("sidebar") && byId("sidebar").classList.contains("open")) setDrawer(false);
  });

  // ---- The composer ------------------------------------------------------------------------------------
  function showError(text) {
    var box = byId("composer-error");
    if (!box) return;
    box.textContent = "";
    if (text) {
      var p = document.createElement("p"), span = document.createElement("span");
      p.className = "error";
      p.innerHTML = '<svg class="icon" aria-hidden="true"><use href="#i-alert"/></svg>';
      span.textContent = text;
      p.append(span);
      box.append(p);
    }
  }

  // After a successful send: clear the box and any old error. On failure the text stays.
  document.addEventListener("htmx:afterRequest", function (event) {
    var form = composer();
    if (event.detail.elt !== form) return;
    if (event.detail.successful) {
      form.reset();
      textbox().value = "";
      autosize(textbox());
      showError("");
    }
  });
  document.addEventListener("htmx:sendError", function () {
    showError("Could not reach the server. Your message is still in the box; try again.");
  });
  document.addEventListener("htmx:responseError", function (event) {
    if (event.detail.xhr.status >= 500) showError("The server had a problem (" + event.detail.xhr.status + "). Try again.");
  });

  // The box grows with its text up to its CSS max-height (field-sizing does it where supported).
  var sizesItself = window.CSS && CSS.supports && CSS.supports("field-sizing", "content");
  function autosize(box) {
    if (sizesItself || !box) return;
    box.style.height = "auto";
    box.style.height = box.scrollHeight + 2 + "px";
  }
  document.addEventListener("input", function (event) { if (event.target.matches("textarea")) autosize(event.target); });

  // Example prompts fill the box (without JavaScript they are links to /?prompt=...).
  document.addEventListener("click", function (event) {
    var example = event.target.closest && event.target.closest("a.example");
    if (!example || !textbox()) return;
    event.preventDefault();
    textbox().value = example.dataset.prompt;
    autosize(textbox());
    focusOn(textbox());
  });

  // ---- Follow the answer as it grows, unless the reader scrolled up ------------------------------------
  var pinned = true;
  function scroller() {
    var list = messages();
    if (!list) return null;
    return getComputedStyle(list).overflowY === "visible" ? document.scrollingElement : list;
  }
  document.addEventListener("scroll", function () {
    var box = scroller();
    if (box) pinned = box.scrollHeight - box.scrollTop - box.clientHeight < 48;
  }, true);
  function scrollToEnd(force) {
    var box = scroller();
    if (box && (pinned || force)) box.scrollTop = box.scrollHeight;
  }
  document.addEventListener("htmx:sseMessage", function (event) {
    // "Retrying (attempt 2)…" and the like: said once in the live region, shown under the answer.
    if (event.detail && event.detail.type === "status") announce(event.target.textContent.replace(/\s+/g, " ").trim() + "…");
    if (event.detail && event.detail.type === "note") announce("The assistant saved a note");
    scrollToEnd(false);
  });
  // A note the assistant saved goes into the Notes panel (out of band), once: a stream may send it again.
  document.addEventListener("htmx:oobBeforeSwap", function (event) {
    var detail = event.detail || {};
    if (!detail.target || detail.target.id !== "notes-list" || !detail.fragment) return;
    detail.fragment.querySelectorAll("li[id^=note-]").forEach(function (item) {
      if (byId(item.id)) item.remove();
    });
  });
  // After a note is added, edited or deleted in place, focus stays in the panel (not lost to the page):
  // an edited note's Edit, else the new-note box (an error there is read with it).
  document.addEventListener("htmx:afterSettle", function (event) {
    var panel = byId("notes"), active = document.activeElement;
    if (!(event.detail && event.detail.xhr)) return;  // a request's swap, not a note arriving on the stream
    var source = event.detail.requestConfig && event.detail.requestConfig.elt;
    if (source && source.querySelector && source.querySelector(".save-note") && event.target === panel) announce("Saved to notes");
    if (!panel || !panel.contains(event.target) || (active && active !== document.body && active.isConnected)) return;
    var item = event.target.closest && event.target.closest("li.note");
    var invalid = panel.querySelector("textarea[aria-invalid=true]");
    focusOn(invalid || (item && item.querySelector(".note-edit > summary")) || byId("note-new"));
  });
  // When the connection fails for good, the SSE extension opens a new one on the sse-connect URL (with
  // no Last-Event-ID): keep that URL at the last render this page has, so the page resumes from there.
  document.addEventListener("htmx:sseMessage", function (event) {
    var message = event.detail || {};
    var source = event.target.closest && event.target.closest("[sse-connect]");
    if (message.type !== "tail" || !message.lastEventId || !source) return;
    var url = new URL(source.getAttribute("sse-connect"), location.href);
    url.searchParams.set("after", message.lastEventId);
    url.searchParams.set("resumed", "1");
    source.setAttribute("sse-connect", url.pathname + url.search);
  });
  document.addEventListener("htmx:afterSwap", function (event) {
    if (event.detail.target === messages()) scrollToEnd(true);
  });

  // ---- Copy: whole messages, and each code block (a head with its language and Copy) -------------------
  function decorate(root) {
    if (!root || !root.querySelectorAll) return;
    root.querySelectorAll(".content pre").forEach(function (pre) {
      var block = pre.parentElement.classList.contains("code-block") ? pre.parentElement : null;
      if (!block) {  // a bare <pre>: give it the same head the server gives fenced code
        var code = pre.querySelector("code"), match = code && /language-([\w+#.-]+)/.exec(code.className);
        block = document.createElement("div");
        block.className = "code-block";
        block.innerHTML = '<div class="code-head"></div>';
        if (match) {
          var lang = document.createElement("span");
          lang.className = "code-lang";
          lang.textContent = match[1];
          block.firstChild.append(lang);
        }
        pre.replaceWith(block);
        block.append(pre);
      }
      var head = block.querySelector(".code-head");
      if (head && !head.querySelector(".code-copy")) head.append(copyButton("code-copy", "Copy", " code"));
      if (window.ResizeObserver && !pre.dataset.watched) { pre.dataset.watched = "1"; scrollables.observe(pre); }
    });
  }
  // Code that scrolls sideways can be scrolled by keyboard: it takes focus while (and only while) it overflows.
  var scrollables = window.ResizeObserver && new ResizeObserver(function (entries) {
    entries.forEach(function (entry) {
      var pre = entry.target;
      if (pre.scrollWidth > pre.clientWidth) pre.tabIndex = 0;
      else pre.removeAttribute("tabindex");
    });
  });
  function copyButton(className, label, hidden) {
    var button = document.createElement("button");
    button.type = "button";
    button.className = "action " + className;
    button.innerHTML = '<svg class="icon" aria-hidden="true"><use href="#i-copy"/></svg><span class="action-label"></span>';
    button.lastChild.textContent = label;
    if (hidden) {
      var extra = document.createElement("span");
      extra.className = "visually-hidden";
      extra.textContent = hidden;
      button.lastChild.append(extra);
    }
    return button;
  }
  function copyText(text) {
    if (navigator.clipboard && window.isSecureContext) return navigator.clipboard.writeText(text);
    return new Promise(function (resolve, reject) {  // plain http: the old way
      var area = document.createElement("textarea");
      area.value = text;
      area.setAttribute("readonly", "");
      area.className = "visually-hidden";
      document.body.append(area);
      area.select();
      var done = document.execCommand("copy");
      area.remove();
      done ? resolve() : reject(new Error("copy refused"));
    });
  }
  // A message's Copy is a link to its stored text (the answer's Markdown source): fetched and copied here.
  function storedText(link) {
    return fetch(link.href, { credentials: "same-origin" }).then(function (response) {
      if (!response.ok) throw new Error("HTTP " + response.status);
      return response.text();
    });
  }
  document.addEventListener("click", function (event) {
    var button = event.target.closest && event.target.closest(".copy-message, .code-copy, .copy-link");
    if (!button) return;
    event.preventDefault();
    var label = button.querySelector(".action-label"), before = label.firstChild.textContent;
    var text;
    if (button.classList.contains("copy-link")) {  // a share link's URL, from its read-only field
      text = Promise.resolve(byId(button.getAttribute("data-copy")).value);
    } else if (button.classList.contains("code-copy")) {
      text = Promise.resolve(button.closest(".code-block").querySelector("pre").innerText.replace(/\n$/, ""));
    } else if (button.href) {  // the answer's stored Markdown
      text = storedText(button);
    } else {  // a shared page's message: its text as shown
      text = Promise.resolve(button.closest("article").querySelector(".content").innerText.replace(/\n$/, ""));
    }
    var copied = navigator.clipboard && window.isSecureContext && window.ClipboardItem
      ? navigator.clipboard.write([new ClipboardItem({ "text/plain": text.then(function (t) { return new Blob([t], { type: "text/plain" }); }) })])
      : text.then(copyText);
    copied.then(function () {
      label.firstChild.textContent = "Copied";
      button.classList.add("copied");
      button.querySelector("use").setAttribute("href", "#i-check");
      announce("Copied");
      setTimeout(function () {
        label.firstChild.textContent = before;
        button.classList.remove("copied");
        button.querySelector("use").setAttribute("href", "#i-copy");
      }, 1600);
    }, function () { announce("Could not copy: the browser refused."); });
  });

  // ---- The drawer (phones), menus, theme -------------------------------------------------------------
  function setDrawer(open) {
    var nav = byId("sidebar"), button = document.querySelector(".drawer-button.js-only"), main = byId("main");
    if (!nav) return;
    nav.classList.toggle("open", open);
    if (button) button.setAttribute("aria-expanded", String(open));
    if (main) main.inert = open;
    if (open) nav.querySelector(".drawer-close.js-only").focus();
    else if (button && phone.matches) button.focus();
  }
  phone.addEventListener("change", function () { if (!phone.matches) setDrawer(false); });
  document.addEventListener("click", function (event) {
    var target = event.target.closest ? event.target : null;
    if (!target) return;
    if (target.closest(".drawer-button.js-only")) setDrawer(!byId("sidebar").classList.contains("open"));
    else if (target.closest(".drawer-close.js-only")) setDrawer(false);
    else if (target.closest(".drawer-backdrop")) { event.preventDefault(); setDrawer(false); }
    // One menu open at a time; a click elsewhere closes it.
    document.querySelectorAll("details.menu[open]").forEach(function (menu) {
      if (!menu.contains(target)) menu.open = false;
    });
  });

  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (!form.matches(".theme-switch")) return;
    var choice = event.submitter && event.submitter.value;
    if (!choice) return;
    event.preventDefault();
    applyTheme(choice);
    var data = new FormData(form);
    data.set("theme", choice);
    fetch(form.action, { method: "POST", body: data, credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (response) { if (!response.ok) throw new Error(String(response.status)); })
      .catch(function () { announce("The theme could not be saved; it applies to this page only."); });
  });
  function applyTheme(choice) {
    var root = document.documentElement, meta = document.querySelector('meta[name="color-scheme"]');
    if (choice === "system") root.removeAttribute("data-theme");
    else root.setAttribute("data-theme", choice);
    if (meta) meta.content = choice === "system" ? "light dark" : choice;
    document.querySelectorAll(".theme-switch button[name=theme]").forEach(function (button) {
      button.setAttribute("aria-pressed", String(button.value === choice));
    });
  }

  // ---- Voice input: record, send to /transcribe, put the text at the cursor. Never sends by itself. -----
  var recorder = null, chunks = [], started = 0, timer = null;
  function micButton() { return byId("mic"); }
  function setMic(state, label) {
    var mic = micButton();
    if (!mic) return;
    mic.classList.toggle("recording", state === "recording");
    mic.classList.toggle("busy", state === "busy");
    mic.disabled = state === "busy";
    mic.querySelector(".mic-label").textContent = label;
    mic.querySelector("use").setAttribute("href", state === "recording" ? "#i-stop" : "#i-mic");
  }
  function showMic() {
    var mic = micButton();
    if (mic && window.MediaRecorder && navigator.mediaDevices) mic.hidden = false;
  }

  function insertAtCursor(text) {
    var box = textbox();
    var start = box.selectionStart, end = box.selectionEnd, before = box.value.slice(0, start);
    var spaced = (before && !/\s$/.test(before) ? " " : "") + text;
    box.value = before + spaced + box.value.slice(end);
    box.selectionStart = box.selectionEnd = start + spaced.length;
    autosize(box);
    box.focus();
  }

  function transcribe(blob) {
    var mic = micButton();
    var data = new FormData();
    data.append("audio", blob, "recording.webm");
    setMic("busy", "Transcribing…");
    fetch(mic.dataset.url, {
      method: "POST", body: data, credentials: "same-origin",
      headers: { "Accept": "application/json", "X-CSRF-Token": csrfToken() },
    }).then(function (response) {
      return response.json().then(function (body) {
        if (!response.ok) throw new Error(body.error ? body.error.message : "Transcription failed (" + response.status + ").");
        if (body.text) insertAtCursor(body.text);
        showError("");
      });
    }).catch(function (error) {
      showError(error.message && error.message !== "Failed to fetch" ? error.message
        : "Could not reach the server to transcribe. Try again.");
    }).finally(function () {
      setMic("idle", "Speak");
      if (document.activeElement === document.body || !document.activeElement) micButton().focus();
    });
  }

  function csrfToken() {
    var field = document.querySelector("#composer input[name=csrf_token]");
    return field ? field.value : "";
  }

  document.addEventListener("click", function (event) {
    var mic = event.target.closest && event.target.closest("#mic");
    if (!mic) return;
    if (recorder && recorder.state === "recording") { recorder.stop(); return; }
    navigator.mediaDevices.getUserMedia({ audio: true }).then(function (stream) {
      chunks = [];
      recorder = new MediaRecorder(stream);
      recorder.ondataavailable = function (e) { if (e.data.size) chunks.push(e.data); };
      recorder.onstop = function () {
        clearInterval(timer);
        stream.getTracks().forEach(function (track) { track.stop(); });
        transcribe(new Blob(chunks, { type: recorder.mimeType || "audio/webm" }));
      };
      recorder.start();
      started = Date.now();
      var tick = function () {
        var seconds = Math.floor((Date.now() - started) / 1000);
        setMic("recording", "Stop " + Math.floor(seconds / 60) + ":" + String(seconds % 60).padStart(2, "0"));
      };
      tick();
      timer = setInterval(tick, 500);
    }).catch(function (error) {
      showError(error && error.name === "NotAllowedError"
        ? "Microphone permission was denied. Allow the microphone for this site to speak instead of typing."
        : "No microphone could be opened (" + (error && error.message || error) + ").");
    });
  });

  // ---- Images: thumbnails with an optional description each, remove, paste and drop ------------------
  // The files live in the form's own file input, so sending works the same with or without this code.
  var descriptions = new Map();
  function fileKey(file) { return file.name + "|" + file.size + "|" + file.lastModified; }
  function imageInput() { return byId("images"); }
  function setImages(files) {
    var input = imageInput(), transfer = new DataTransfer();
    files.forEach(function (file) { transfer.items.add(file); });
    input.files = transfer.files;
    renderPreviews();
  }
  function addImages(fileList) {
    var input = imageInput();
    if (!input) return;
    var files = Array.from(input.files).concat(Array.from(fileList).filter(function (f) { return /^image\//.test(f.type); }));
    setImages(files);
  }
  function renderPreviews() {
    var list = byId("previews"), input = imageInput();
    if (!list || !input) return;
    list.textContent = "";
    Array.from(input.files).forEach(function (file, index) {
      var item = document.createElement("li"), img = document.createElement("img");
      var remove = document.createElement("button"), alt = document.createElement("input");
      img.src = URL.createObjectURL(file);
      img.alt = file.name;
      remove.type = "button";
      remove.className = "remove";
      remove.innerHTML = '<svg class="icon" aria-hidden="true"><use href="#i-close"/></svg>';
      remove.setAttribute("aria-label", "Remove " + file.name);
      remove.title = "Remove";
      remove.addEventListener("click", function () {
        setImages(Array.from(input.files).filter(function (_f, i) { return i !== index; }));
        var next = list.querySelector(".remove") ;
        focusOn(next || byId("content"));
      });
      alt.name = "image_alt";
      alt.maxLength = 300;
      alt.placeholder = "Describe it (optional)";
      alt.setAttribute("aria-label", "Description of " + file.name + " (optional)");
      alt.value = descriptions.get(fileKey(file)) || "";
      alt.addEventListener("input", function () { descriptions.set(fileKey(file), alt.value); });
      item.append(img, remove, alt);
      list.append(item);
    });
  }
  document.addEventListener("change", function (event) { if (event.target.id === "images") renderPreviews(); });
  document.addEventListener("reset", function (event) {
    if (event.target.id === "composer") { descriptions.clear(); setTimeout(renderPreviews, 0); }
  });
  document.addEventListener("paste", function (event) {
    if (event.target.id === "content" && event.clipboardData && event.clipboardData.files.length) {
      addImages(event.clipboardData.files);
    }
  });
  ["dragover", "dragleave", "drop"].forEach(function (type) {
    document.addEventListener(type, function (event) {
      var form = composer();
      if (!form || !form.contains(event.target)) return;
      event.preventDefault();
      form.classList.toggle("dragging", type === "dragover");
      if (type === "drop" && event.dataTransfer) addImages(event.dataTransfer.files);
    });
  });

  // ---- The token meter: the draft's tokens and the context it fills, asked for as you type ------------
  var meterTimer = null, meterAsked = 0, lastWarning = "";
  function meterBox() { return byId("meter"); }
  function refreshMeter() {
    var box = meterBox(), form = composer();
    if (!box || !form) return;
    var asked = ++meterAsked, body = new FormData();
    body.append("content", textbox() ? textbox().value : "");
    if (byId("preset")) body.append("preset_id", byId("preset").value);  // a new chat: its system prompt counts
    fetch(box.dataset.url, {
      method: "POST", body: body, credentials: "same-origin",
      headers: { "HX-Request": "true", "X-CSRF-Token": form.querySelector("[name=csrf_token]").value },
    }).then(function (response) { return response.ok ? response.text() : null; }).then(function (html) {
      if (!html || asked !== meterAsked || !meterBox()) return;  // a newer answer is on its way
      var holder = document.createElement("div");
      holder.innerHTML = html;
      var fresh = holder.querySelector("#meter");
      if (!fresh) return;
      meterBox().replaceWith(fresh);
      var warning = Array.prototype.map.call(fresh.querySelectorAll(".meter-warning"), function (p) {
        return p.textContent.replace(/\s+/g, " ").trim();
      }).join(" ");
      if (warning && warning !== lastWarning) announce(warning);
      lastWarning = warning;
    }).catch(function () { /* the meter is a hint: a failed look leaves the last one */ });
  }
  document.addEventListener("input", function (event) {
    if (event.target.id !== "content") return;
    clearTimeout(meterTimer);
    meterTimer = setTimeout(refreshMeter, 250);
  });
  // After a send the conversation changed (an answer that ends asks again, in noticeAnswers).
  document.addEventListener("htmx:afterRequest", function (event) {
    if (event.detail.elt === composer() && event.detail.successful) refreshMeter();
  });

  // ---- A preset chosen for a new chat puts its opening prompt in an empty message box --------------------
  var openingPut = "";
  document.addEventListener("change", function (event) {
    if (event.target.id !== "preset" || !textbox()) return;
    var option = event.target.selectedOptions[0], opening = option ? option.dataset.opening || "" : "";
    if (!textbox().value.trim() || textbox().value === openingPut) {
      textbox().value = opening;
      openingPut = opening;
      autosize(textbox());
    }
    refreshMeter();
  });

  // ---- Feedback and chat settings: say what happened after the swap, keep focus where it was --------------
  document.addEventListener("htmx:afterSwap", function (event) {
    var target = event.detail.target;
    if (!target || !target.id) return;
    var fresh = byId(target.id) || target;
    if (/^feedback-\d+$/.test(target.id)) {
      var error = fresh.querySelector(".error"), lost = lastFocused;
      announce(error ? error.textContent.trim() : "Feedback saved");
      if (error) { var box = fresh.querySelector("textarea"); if (box) box.focus(); }
      else if (lost && !lost.isConnected) {  // the pressed thumb, or the comment's summary, again
        var again = fresh.querySelector(lost.matches(".thumb-up") ? ".thumb-up" : lost.matches(".thumb-down") ? ".thumb-down" : "summary");
        if (again) again.focus();
      }
    } else if (target.id === "chat-settings") {
      var problem = fresh.querySelector(".error");
      announce(problem ? problem.textContent.trim() : "Saved. The next answer uses these settings.");
      var summary = fresh.querySelector("summary");
      if (summary && (!document.activeElement || document.activeElement === document.body)) summary.focus();
      refreshMeter();
    }
  });

  // A panel opened from an answer's row (Retry with…, Comment) comes fully into view.
  document.addEventListener("toggle", function (event) {
    var details = event.target;
    if (!details.open || !details.closest || !details.closest(".actions")) return;
    var panel = details.querySelector(".menu-panel");
    if (panel) panel.scrollIntoView({ block: "nearest" });
  }, true);

  // ---- Rooms: one event stream per page (HTMX's sse extension); typing and leaving reported here ---------
  // A message already on the page (its own request's answer came first) is not appended twice.
  document.addEventListener("htmx:oobBeforeSwap", function (event) {
    var target = event.detail.target, fragment = event.detail.fragment;
    if (!target || target.id !== "messages" || !fragment || !fragment.querySelectorAll) return;
    fragment.querySelectorAll("article.message[id]").forEach(function (article) {
      if (byId(article.id)) article.remove();
    });
  });
  function room() { return byId("room"); }
  function roomPost(url, fields) {
    var body = new FormData();
    body.append("csrf_token", csrfToken() || (document.querySelector("#room input[name=csrf_token]") || {}).value || "");
    Object.keys(fields).forEach(function (name) { body.append(name, fields[name]); });
    return body;
  }
  var typingSent = 0, typingUrl = null;
  document.addEventListener("input", function (event) {
    var here = room();
    if (!here || event.target.id !== "content") return;
    var now = Date.now();
    if (now - typingSent < 2000) return;  // at most every 2 s while typing; others clear it after a few seconds
    typingSent = now;
    typingUrl = here.dataset.typingUrl;
    fetch(typingUrl, { method: "POST", body: roomPost(typingUrl, { typing: "1" }), credentials: "same-origin",
      headers: { "X-CSRF-Token": csrfToken() } }).catch(function () {});
  });
  document.addEventListener("submit", function (event) {
    if (event.target.id === "composer") typingSent = 0;
  });
  window.addEventListener("pagehide", function () {
    var here = room();
    if (!here || !navigator.sendBeacon) return;
    navigator.sendBeacon(here.dataset.leaveUrl, roomPost(here.dataset.leaveUrl, { page: here.dataset.page }));
  });
})();
