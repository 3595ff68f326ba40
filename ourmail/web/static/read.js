// The message page: keyboard shortcuts and dates in the reader's time zone.
// r reply, a reply all, f forward, # delete, u back to the list, j older, k newer.
"use strict";
// Keys are read through ourmail.key (static/keys.js): any layout, never while typing or in a
// dialog, and not at all when the user turned single-key shortcuts off.
document.addEventListener("keydown", (event) => {
  const key = window.ourmail && window.ourmail.key(event);
  if (!key) return;
  const action = document.querySelector(`.message [data-key="${CSS.escape(key)}"]`);
  if (!action) return;
  event.preventDefault();
  action.click();
});
document.querySelectorAll(".message time[datetime]").forEach((time) => {
  const when = new Date(time.dateTime);
  if (Number.isNaN(when.getTime())) return;
  time.title = time.textContent;
  time.textContent = when.toLocaleString(document.documentElement.lang || undefined, {
    dateStyle: "medium",
    timeStyle: "short",
  });
});
