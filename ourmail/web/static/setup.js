// The set-up wizard's password strength meter (templates/setup.html): the rules the server
// enforces (ourmail/manage/passwordrules.py) checked as the admin types, with the same list
// of common passwords (/setup/common-passwords.txt), then a rough strength from the length
// and the kinds of characters.  Without this script the form works the same; the server
// says what is wrong.
"use strict";

(function () {
  const meter = document.getElementById("strength");
  const text = document.getElementById("strength-text");
  const input = document.querySelector("input[data-meter]");
  if (!meter || !text || !input) {
    return;
  }
  let common = new Set();
  fetch("/setup/common-passwords.txt", { credentials: "same-origin" })
    .then((r) => (r.ok ? r.text() : ""))
    .then((body) => {
      common = new Set(
        body.split("\n").filter((l) => l && !l.startsWith("#")).map((l) => l.trim().toLowerCase())
      );
      update();
    })
    .catch(() => {});

  function localPart() {
    const field = meter.dataset.localField ? document.getElementById(meter.dataset.localField) : null;
    return (field ? field.value : meter.dataset.local || "").trim().toLowerCase();
  }

  // The characters the server refuses in a form field (ourmail/web/setuppages.py _CONTROL).
  const control = /[\x00-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2066-\u2069\ufeff]/;

  function judge(password) {
    const lowered = password.toLowerCase();
    const local = localPart();
    if (control.test(password)) {
      return [0, text.dataset.control];
    }
    // Characters (code points), as the server counts them: an emoji is one, not two.
    const length = [...password].length;
    if (length < Number(meter.dataset.min)) {
      return [0, text.dataset.short];
    }
    if (local.length >= 3 && lowered.includes(local)) {
      return [0, text.dataset.name];
    }
    if (common.has(lowered)) {
      return [0, text.dataset.common];
    }
    const kinds = [/[a-z]/, /[A-Z]/, /[0-9]/, /[^a-zA-Z0-9]/].filter((re) => re.test(password)).length;
    const score = Math.min(4, Math.floor(length / 6) + (kinds >= 3 ? 1 : 0));
    if (score <= 1) {
      return [1, text.dataset.weak];
    }
    return [score, [text.dataset.fair, text.dataset.good, text.dataset.strong][score - 2]];
  }

  function update() {
    if (!input.value) {
      meter.value = 0;
      return;
    }
    const [score, message] = judge(input.value);
    meter.value = score;
    text.textContent = message;
  }

  input.addEventListener("input", update);
  const local = meter.dataset.localField && document.getElementById(meter.dataset.localField);
  if (local) {
    local.addEventListener("input", update);
  }
})();
