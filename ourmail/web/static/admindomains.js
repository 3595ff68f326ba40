// The admin console's DNS page (templates/admin_dns.html): a button that copies the zone
// snippet.  Without script the button stays hidden and the snippet is plain selectable text.
"use strict";
document.querySelectorAll("button[data-copy]").forEach(function (button) {
  var source = document.getElementById(button.getAttribute("data-copy"));
  if (!source || !navigator.clipboard) {
    return;
  }
  button.hidden = false;
  button.addEventListener("click", function () {
    navigator.clipboard.writeText(source.textContent).then(function () {
      button.textContent = button.getAttribute("data-done");
    });
  });
});
