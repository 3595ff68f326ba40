// Keyboard shortcuts every logged-in page shares (issue 16 point 10): "c" writes, "g" then
// "i" opens the inbox, "/" goes to the search field, "?" shows the list of shortcuts.  The
// list, message and compose pages add their own; they read keys through ourmail.key(event),
// so a letter is found on any keyboard layout (Greek too), and none fires while the user
// types, while a dialog is open, or after the user turned single-key shortcuts off (WCAG 2.1
// SC 2.1.4): that choice is kept in this browser (localStorage).
"use strict";
(() => {
  const STORE = "ourmail.shortcuts";
  const help = document.getElementById("shortcuts");
  const toggle = document.getElementById("shortcuts-on");
  const opener = document.getElementById("shortcuts-open");

  function enabled() {
    try {
      return window.localStorage.getItem(STORE) !== "off";
    } catch {
      return true;
    }
  }

  // The shortcut a key press stands for ("c", "#", "?"...), or null when it is no shortcut.
  function key(event) {
    if (event.defaultPrevented || event.isComposing || event.ctrlKey || event.metaKey || event.altKey) {
      return null;
    }
    const target = event.target;
    const fields =
      "input:not([type=checkbox]):not([type=radio]):not([type=button]):not([type=submit]), " +
      "textarea, select, [contenteditable]:not([contenteditable=false])";
    if (target.closest && target.closest(fields)) {
      return null;
    }
    if (document.querySelector("dialog[open]")) return null;
    if (event.key.length !== 1 && event.key !== "Enter") return null;
    if (!enabled() && event.key !== "Enter") return null;
    if (/^[\x20-\x7e]$/.test(event.key) || event.key === "Enter") return event.key;
    // A letter of another layout (Greek): the Latin letter on the same key.
    const m = /^Key([A-Z])$/.exec(event.code || "");
    return m ? (event.shiftKey ? m[1] : m[1].toLowerCase()) : null;
  }
  window.ourmail = Object.assign(window.ourmail || {}, { key });

  let pendingG = 0;
  document.addEventListener("keydown", (event) => {
    const k = key(event);
    if (k === null) return;
    if (pendingG && Date.now() - pendingG < 1500) {
      pendingG = 0;
      if (k === "i") {
        event.preventDefault();
        window.location.assign("/");
      }
      return;
    }
    pendingG = 0;
    if (k === "g") {
      pendingG = Date.now();
    } else if (k === "c") {
      event.preventDefault();
      window.location.assign("/compose");
    } else if (k === "/") {
      const search = document.querySelector(
        "[role=search] input:not([type=hidden]), input[type=search]",
      );
      if (search) {
        event.preventDefault();
        const folded = search.closest("details");
        if (folded) folded.open = true;
        search.focus();
      }
    } else if (k === "?" && help) {
      event.preventDefault();
      help.showModal();
    }
  });

  if (help && opener && toggle) {
    opener.hidden = false;
    opener.addEventListener("click", () => help.showModal());
    toggle.checked = enabled();
    toggle.addEventListener("change", () => {
      try {
        window.localStorage.setItem(STORE, toggle.checked ? "on" : "off");
      } catch {
        toggle.checked = true;
      }
    });
  }
})();
