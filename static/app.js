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

  // Voice input: record, send to /transcribe, put the text at the cursor. Never sends by itself.
  var recorder = null, chunks = [], started = 0, timer = null;
  function micButton() { return document.getElementById("mic"); }
  function setMic(state, label) {
    var mic = micButton();
    if (!mic) return;
    mic.classList.toggle("recording", state === "recording");
    mic.classList.toggle("busy", state === "busy");
    mic.disabled = state === "busy";
    mic.textContent = label;
  }
  function showMic() {
    var mic = micButton();
    if (mic && window.MediaRecorder && navigator.mediaDevices) mic.hidden = false;
  }
  document.addEventListener("DOMContentLoaded", showMic);
  document.addEventListener("htmx:afterSettle", showMic);

  function insertAtCursor(text) {
    var box = document.getElementById("content");
    var start = box.selectionStart, end = box.selectionEnd, before = box.value.slice(0, start);
    var spaced = (before && !/\s$/.test(before) ? " " : "") + text;
    box.value = before + spaced + box.value.slice(end);
    box.selectionStart = box.selectionEnd = start + spaced.length;
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
    }).finally(function () { setMic("idle", "Speak"); });
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
        setMic("recording", "■ " + Math.floor(seconds / 60) + ":" + String(seconds % 60).padStart(2, "0"));
      };
      tick();
      timer = setInterval(tick, 500);
    }).catch(function (error) {
      showError(error && error.name === "NotAllowedError"
        ? "Microphone permission was denied. Allow the microphone for this site to speak instead of typing."
        : "No microphone could be opened (" + (error && error.message || error) + ").");
    });
  });

  // Images: thumbnails before sending, a way to remove one, paste and drag-and-drop into the composer.
  // The files live in the form's own file input, so sending works the same with or without this code.
  function imageInput() { return document.getElementById("images"); }
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
    var list = document.getElementById("previews"), input = imageInput();
    if (!list || !input) return;
    list.textContent = "";
    Array.from(input.files).forEach(function (file, index) {
      var item = document.createElement("li"), img = document.createElement("img"), remove = document.createElement("button");
      img.src = URL.createObjectURL(file);
      img.alt = file.name;
      remove.type = "button";
      remove.textContent = "×";
      remove.setAttribute("aria-label", "Remove " + file.name);
      remove.addEventListener("click", function () {
        setImages(Array.from(input.files).filter(function (_f, i) { return i !== index; }));
      });
      item.append(img, remove);
      list.append(item);
    });
  }
  document.addEventListener("change", function (event) { if (event.target.id === "images") renderPreviews(); });
  document.addEventListener("reset", function (event) {
    if (event.target.id === "composer") setTimeout(renderPreviews, 0);
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
})();
