// The message page: keyboard shortcuts and dates in the reader's time zone.
// r reply, a reply all, f forward, # delete, u back to the list, j older, k newer.
"use strict";
document.addEventListener("keydown", (event) => {
  if (event.ctrlKey || event.metaKey || event.altKey || event.defaultPrevented) return;
  const target = event.target;
  if (target.closest && target.closest("input, textarea, select, [contenteditable]")) return;
  const action = document.querySelector(`.message [data-key="${CSS.escape(event.key)}"]`);
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
