// Keyboard shortcuts every logged-in page shares (issue 16 point 10): "c" writes, "g" then
// "i" opens the inbox, "/" goes to the search field, "?" shows the list of shortcuts.  The
// list, message and compose pages add their own in their scripts.
"use strict";
(() => {
  const help = document.getElementById("shortcuts");
  let pendingG = false;

  function typing(target) {
    return target.closest("input, textarea, select, [contenteditable]:not([contenteditable=false])");
  }

  document.addEventListener("keydown", (event) => {
    if (event.defaultPrevented || event.ctrlKey || event.metaKey || event.altKey) return;
    if (typing(event.target)) return;
    const key = event.key;
    if (pendingG) {
      pendingG = false;
      if (key === "i") {
        event.preventDefault();
        window.location.assign("/");
      }
      return;
    }
    if (key === "g") {
      pendingG = true;
      return;
    }
    if (key === "c") {
      event.preventDefault();
      window.location.assign("/compose");
    } else if (key === "/") {
      const search = document.querySelector("input[type=search]");
      if (search) {
        event.preventDefault();
        search.focus();
      }
    } else if (key === "?" && help) {
      event.preventDefault();
      if (help.open) help.close();
      else help.showModal();
    }
  });
})();
