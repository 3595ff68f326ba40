// Live folder counts (issue 16 point 3): listens to /events (server-sent events), updates the
// folder tree and tells the page which folders changed ("ourmail:folder-changed").
"use strict";
(() => {
  // Looked up at each event: the list page swaps the tree in when it refreshes.
  const tree0 = document.getElementById("folders");
  if (!tree0 || !window.EventSource) return;
  const unreadWord = tree0.dataset.unread || "unread";

  function link(name, unseen) {
    const li = document.createElement("li");
    li.dataset.folder = name;
    const a = document.createElement("a");
    a.href = "/mail?" + new URLSearchParams({ folder: name });
    const label = document.createElement("span");
    label.className = "name";
    label.textContent = name;
    const badge = document.createElement("span");
    badge.className = "unseen";
    const count = document.createElement("span");
    count.className = "count";
    const hidden = document.createElement("span");
    hidden.className = "visually-hidden";
    hidden.textContent = " " + unreadWord;
    badge.append(count, hidden);
    a.append(label, badge);
    li.append(a);
    setCount(li, unseen);
    return li;
  }

  function setCount(li, unseen) {
    const badge = li.querySelector(".unseen");
    badge.querySelector(".count").textContent = String(unseen);
    badge.hidden = unseen === 0;
  }

  const source = new EventSource("/events");
  source.addEventListener("folders", (event) => {
    const tree = document.getElementById("folders");
    if (!tree) return;
    const data = JSON.parse(event.data);
    const rows = new Map(data.folders.map(([name, unseen]) => [name, unseen]));
    const items = [...tree.querySelectorAll("li[data-folder]")];
    const same = items.length === rows.size && items.every((li) => rows.has(li.dataset.folder));
    if (same) {
      for (const li of items) setCount(li, rows.get(li.dataset.folder));
    } else {
      const current = tree.querySelector("a[aria-current]");
      const open = current ? current.closest("li").dataset.folder : null;
      tree.replaceChildren(...data.folders.map(([name, unseen]) => link(name, unseen)));
      const again = open && [...tree.children].find((li) => li.dataset.folder === open);
      if (again) again.querySelector("a").setAttribute("aria-current", "page");
    }
    for (const folder of data.changed) {
      document.dispatchEvent(new CustomEvent("ourmail:folder-changed", { detail: { folder } }));
    }
  });
})();
