// The compose page's comforts (ourmail/web/compose.py); the form works without them.
// Attachments upload as they are chosen, with progress; address fields complete from
// /compose/addresses; a changed form is saved as a draft every 30 s; Ctrl+Enter sends and
// Esc asks before discarding.
"use strict";
(function () {
  const form = document.getElementById("compose");
  if (!form) return;
  const csrf = document.body.dataset.csrf;
  const list = document.getElementById("attachment-list");
  const fileInput = document.getElementById("file");
  const progress = document.getElementById("upload-progress");
  const uploadStatus = document.getElementById("upload-status");
  const draftStatus = document.getElementById("draft-status");
  const maxBytes = Number(form.dataset.maxAttachments);
  let changed = false;
  let uploading = 0;
  let leaving = false;

  form.addEventListener("input", (event) => {
    if (event.target !== fileInput) changed = true;
  });

  function uploadedBytes() {
    let total = 0;
    for (const box of list.querySelectorAll("input[name=attachment]")) {
      if (box.checked) total += Number(box.dataset.size || 0);
    }
    return total;
  }

  function addAttachment(info) {
    const item = document.createElement("li");
    const label = document.createElement("label");
    const box = document.createElement("input");
    box.type = "checkbox";
    box.name = "attachment";
    box.value = info.id;
    box.checked = true;
    box.dataset.size = info.size;
    const size = document.createElement("span");
    size.className = "size";
    size.textContent = "(" + (info.size / 1024).toFixed(1) + " KB)";
    label.append(box, " " + info.filename + " ", size);
    item.append(label);
    list.append(item);
    changed = true;
  }

  function upload(file) {
    return new Promise((resolve) => {
      const xhr = new XMLHttpRequest();
      xhr.open("POST", "/compose/upload");
      xhr.setRequestHeader("X-CSRF-Token", csrf);
      xhr.setRequestHeader("X-Filename", encodeURIComponent(file.name));
      xhr.setRequestHeader("Content-Type", file.type || "application/octet-stream");
      xhr.upload.addEventListener("progress", (event) => {
        if (event.lengthComputable) progress.value = Math.round((100 * event.loaded) / event.total);
      });
      xhr.addEventListener("load", () => {
        if (xhr.status === 200) {
          addAttachment(JSON.parse(xhr.responseText));
          uploadStatus.textContent = "";
        } else {
          uploadStatus.textContent =
            xhr.status === 413 ? form.dataset.tooLarge : form.dataset.uploadFailed;
        }
        resolve();
      });
      xhr.addEventListener("error", () => {
        uploadStatus.textContent = form.dataset.uploadFailed;
        resolve();
      });
      xhr.send(file);
    });
  }

  if (fileInput) {
    fileInput.addEventListener("change", async () => {
      const files = Array.from(fileInput.files);
      fileInput.value = "";
      uploading += 1;
      progress.hidden = false;
      for (const file of files) {
        if (uploadedBytes() + file.size > maxBytes) {
          uploadStatus.textContent = form.dataset.tooLarge;
          continue;
        }
        progress.value = 0;
        uploadStatus.textContent = file.name;
        await upload(file);
      }
      uploading -= 1;
      progress.hidden = uploading === 0;
    });
  }

  // Address completion: the datalist offers the whole field with the last address completed,
  // so the browser's own list (keyboard and screen reader included) does the rest.
  for (const input of form.querySelectorAll("input.addresses")) {
    const choices = document.getElementById(input.getAttribute("list"));
    let timer = null;
    let asked = "";
    input.addEventListener("input", () => {
      clearTimeout(timer);
      timer = setTimeout(async () => {
        const value = input.value;
        const cut = value.lastIndexOf(",");
        const before = cut >= 0 ? value.slice(0, cut + 1) + " " : "";
        const query = value.slice(cut + 1).trim();
        if (query.length < 2 || query === asked) return;
        asked = query;
        const response = await fetch("/compose/addresses?q=" + encodeURIComponent(query));
        if (!response.ok) return;
        const rows = await response.json();
        choices.replaceChildren(
          ...rows.map((row) => {
            const option = document.createElement("option");
            const name = row.name ? '"' + row.name.replace(/"/g, "'") + '" ' : "";
            option.value = before + (name ? name + "<" + row.address + ">" : row.address);
            return option;
          })
        );
      }, 200);
    });
  }

  // Rich text: a contenteditable with bold, italic, lists and links; its markup goes in the
  // "html" field (the server cleans it) and its text in the plain body.
  const rich = document.getElementById("rich");
  const editor = document.getElementById("editor");
  const toggle = document.getElementById("rich-toggle");
  const textarea = document.getElementById("body");
  let richOn = false;

  function setRich(on) {
    if (on && !editor.textContent.trim()) editor.innerText = textarea.value;
    if (!on) textarea.value = editor.innerText;
    richOn = on;
    rich.hidden = !on;
    textarea.hidden = on;
    toggle.setAttribute("aria-pressed", String(on));
  }

  function syncRich() {
    form.elements.html.value = richOn ? editor.innerHTML : "";
    if (richOn) textarea.value = editor.innerText;
  }

  toggle.hidden = false;
  toggle.addEventListener("click", () => {
    setRich(!richOn);
    (richOn ? editor : textarea).focus();
    changed = true;
  });
  for (const button of rich.querySelectorAll("[data-command]")) {
    button.addEventListener("click", () => {
      const command = button.dataset.command;
      editor.focus();
      if (command === "createLink") {
        const url = window.prompt(form.dataset.linkPrompt, "https://");
        if (url && /^(https?:|mailto:)/i.test(url.trim())) {
          document.execCommand("createLink", false, url.trim());
        }
      } else {
        document.execCommand(command);
      }
      changed = true;
    });
  }
  if (editor.textContent.trim()) setRich(true);

  // The draft save under way, if any: a send waits for it, so that it carries the draft's
  // new reference and the server drops that draft (not an older one, leaving this behind).
  let saving = null;

  function saveDraft() {
    if (!saving) saving = storeDraft().finally(() => { saving = null; });
    return saving;
  }

  async function storeDraft() {
    if (!changed || uploading || leaving) return;
    changed = false;
    syncRich();
    const data = new FormData(form);
    data.delete("file");
    try {
      const response = await fetch("/compose/draft", {
        method: "POST",
        body: data,
        headers: { "X-CSRF-Token": csrf, Accept: "application/json" },
      });
      if (!response.ok) throw new Error(String(response.status));
      const saved = await response.json();
      form.elements.draft.value = saved.draft;
      draftStatus.textContent = form.dataset.saved;
    } catch (error) {
      changed = true;
    }
  }
  setInterval(saveDraft, 30000);

  const send = document.getElementById("send");
  const discard = document.getElementById("discard");
  form.addEventListener("submit", (event) => {
    if (saving) {
      // Send once the save under way has its answer (it sets the draft's reference).
      event.preventDefault();
      const submitter = event.submitter;
      saving.then(() => form.requestSubmit(submitter));
      return;
    }
    syncRich();
    leaving = true;
  });
  discard.addEventListener("click", (event) => {
    if (!window.confirm(form.dataset.confirmDiscard)) event.preventDefault();
  });
  form.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      form.requestSubmit(send);
    }
  });
  document.addEventListener("keydown", (event) => {
    // Esc in an address field first closes the browser's list of completions.
    const offering = event.target.list && event.target.list.options.length > 0;
    if (event.key === "Escape" && !event.defaultPrevented && !offering) {
      event.preventDefault();
      if (window.confirm(form.dataset.confirmDiscard)) form.requestSubmit(discard);
    }
  });
})();
