// The message list (templates/list.html): select all, actions without a page reload, drag and
// drop onto the folder tree, keyboard keys (j/k move, x selects, Enter opens, # deletes,
// ! reports spam) and refreshing when new mail arrives.  Without it every action is a form.
"use strict";
(function () {
  const csrf = document.body.dataset.csrf;
  const list = () => document.getElementById("list");
  const rows = () => Array.from(document.querySelectorAll("#list tr.row"));
  const boxes = () => Array.from(document.querySelectorAll('#list input[name="m"]'));

  function mark(box) {
    box.closest("tr").classList.toggle("selected", box.checked);
  }

  // "Select all" shows the rows' state: all, some (indeterminate) or none; also after the
  // list was swapped in with a selection kept.
  function showAll() {
    const all = document.getElementById("select-all");
    if (!all) return;
    const picked = boxes().filter((b) => b.checked).length;
    all.checked = picked > 0 && picked === boxes().length;
    all.indeterminate = picked > 0 && picked < boxes().length;
  }

  function setup() {
    const all = document.getElementById("select-all");
    if (all) all.hidden = false;
    boxes().forEach(mark);
    showAll();
  }

  // Replace the list and the folder tree with those of a freshly fetched page.
  function swap(html, keep) {
    const page = new DOMParser().parseFromString(html, "text/html");
    const fresh = page.getElementById("list");
    const tree = page.getElementById("folders");
    if (!fresh) return false;
    const focused = document.activeElement && document.activeElement.closest("tr.row");
    const uid = focused && focused.dataset.uid;
    // The search form stays as it is: someone may be typing in it (the same query either way).
    const search = list().querySelector("details.search");
    const freshSearch = fresh.querySelector("details.search");
    if (search && freshSearch) freshSearch.replaceWith(search);
    list().replaceWith(fresh);
    if (tree) document.getElementById("folders").replaceWith(tree);
    boxes().forEach((b) => { if (keep && keep.has(b.value)) b.checked = true; });
    setup();
    const again = uid && document.querySelector('#list tr.row[data-uid="' + uid + '"] td.subject a');
    if (again) again.focus();
    return true;
  }

  async function post(fields) {
    const body = new URLSearchParams(fields);
    const res = await fetch("/mail/action", {
      method: "POST", body: body, credentials: "same-origin",
      headers: { "X-CSRF-Token": csrf },
    });
    if (res.ok && res.redirected && swap(await res.text())) {
      history.replaceState(null, "", res.url);
      return;
    }
    // An error page: show its message above the list.
    const page = new DOMParser().parseFromString(await res.text(), "text/html");
    const error = page.querySelector(".error");
    const note = document.createElement("p");
    note.className = "notice error";
    note.setAttribute("role", "alert");
    note.textContent = error ? error.textContent : String(res.status);
    const old = list().querySelector(".notice");
    if (old) old.replaceWith(note); else list().querySelector("h1").after(note);
  }

  function selection() {
    return boxes().filter((b) => b.checked).map((b) => b.value);
  }

  function fields(action, picked, extra) {
    const form = document.getElementById("messages");
    const f = [["csrf", csrf], ["action", action], ["back", form.elements.back.value]];
    picked.forEach((v) => f.push(["m", v]));
    return f.concat(extra || []);
  }

  document.addEventListener("change", (e) => {
    const t = e.target;
    if (t.id === "select-all") boxes().forEach((b) => { b.checked = t.checked; mark(b); });
    else if (t.name === "m") { mark(t); showAll(); }
  });

  document.addEventListener("submit", (e) => {
    const form = e.target;
    if (form.id !== "messages" || !e.submitter) return;
    const picked = selection();
    if (!picked.length) return;  // the server's page says to select messages first
    e.preventDefault();
    const extra = e.submitter.value === "move" ? [["target", form.elements.target.value]] : [];
    post(fields(e.submitter.value, picked, extra));
  });

  // Drag rows onto a folder of the tree: the selection, or the dragged row alone.
  document.addEventListener("dragstart", (e) => {
    const row = e.target.closest && e.target.closest("#list tr.row");
    if (!row) return;
    const box = row.querySelector('input[name="m"]');
    const picked = box.checked ? selection() : [box.value];
    e.dataTransfer.setData("application/x-ourmail-messages", JSON.stringify(picked));
    e.dataTransfer.effectAllowed = "move";
    row.classList.add("dragging");
  });
  document.addEventListener("dragend", (e) => {
    const row = e.target.closest && e.target.closest("tr.row");
    if (row) row.classList.remove("dragging");
  });
  const target = (e) => e.target.closest && e.target.closest("#folders li[data-folder]");
  document.addEventListener("dragover", (e) => {
    const li = target(e);
    if (!li || !e.dataTransfer.types.includes("application/x-ourmail-messages")) return;
    e.preventDefault();
    e.dataTransfer.dropEffect = "move";
    li.classList.add("drop-target");
  });
  document.addEventListener("dragleave", (e) => {
    const li = target(e);
    if (li) li.classList.remove("drop-target");
  });
  document.addEventListener("drop", (e) => {
    const li = target(e);
    if (!li) return;
    e.preventDefault();
    li.classList.remove("drop-target");
    let picked;
    try { picked = JSON.parse(e.dataTransfer.getData("application/x-ourmail-messages")); }
    catch (err) { return; }
    if (Array.isArray(picked) && picked.length)
      post(fields("move", picked, [["target", li.dataset.folder]]));
  });

  // Keyboard keys, as in Gmail; never while typing in a field.
  // Keys are read through ourmail.key (static/keys.js): any layout, never while typing or in a
  // dialog, and not at all when the user turned single-key shortcuts off.
  document.addEventListener("keydown", (e) => {
    const key = window.ourmail && window.ourmail.key(e);
    if (!key || !list()) return;
    const all = rows();
    const row = document.activeElement && document.activeElement.closest("#list tr.row");
    const at = all.indexOf(row);
    const focus = (r) => r && r.querySelector("td.subject a").focus();
    if (key === "j" || key === "k") {
      focus(all[at < 0 ? 0 : Math.min(all.length - 1, Math.max(0, at + (key === "j" ? 1 : -1)))]);
    } else if (key === "x" && row) {
      const box = row.querySelector('input[name="m"]');
      box.checked = !box.checked;
      mark(box);
      showAll();
    } else if (key === "Enter" && row && e.target.type === "checkbox") {
      location.href = row.querySelector("td.subject a").href;
    } else if (key === "#" || key === "!") {
      const button = document.querySelector('#messages button[data-key="' + key + '"]');
      if (!button) return;
      let picked = selection();
      if (!picked.length && row) picked = [row.querySelector('input[name="m"]').value];
      if (picked.length) post(fields(button.value, picked));
    } else {
      return;
    }
    e.preventDefault();
  });

  // New mail in the open folder (static/live.js): fetch the page again and swap the list in;
  // events that come while a fetch runs make one more fetch, not one each.
  let busy = false, again = false;
  async function refresh() {
    if (busy) { again = true; return; }
    busy = true;
    try {
      do {
        again = false;
        const res = await fetch(location.href, { credentials: "same-origin" });
        const html = res.ok ? await res.text() : null;
        // The selection as it is now, not as it was when the fetch began.
        if (html !== null) swap(html, new Set(selection()));
      } while (again);
    } finally {
      busy = false;
    }
  }
  document.addEventListener("ourmail:folder-changed", (e) => {
    const open = list();
    if (open && e.detail && e.detail.folder === open.dataset.folder) refresh();
  });

  setup();
})();
