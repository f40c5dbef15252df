// Every htmx request carries the CSRF token of the double-submit cookie (starlette-csrf).
document.addEventListener("htmx:configRequest", (event) => {
  const match = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/);
  if (match) event.detail.headers["x-csrftoken"] = decodeURIComponent(match[1]);
});

// The decision dialogs: opened for one row (data-ids) or for the selected rows; the verification
// dialog opens from inside the confirm form, whose fields it submits with the code.
document.addEventListener("click", (event) => {
  const opener = event.target.closest("[data-open]");
  if (opener) {
    const dialog = document.getElementById(opener.dataset.open);
    const field = dialog.dataset.field || "order_ids";
    const ids = opener.dataset.ids
      ? [opener.dataset.ids]
      : [...document.querySelectorAll(`input[type=checkbox][name=${field}]:checked`)].map((box) => box.value);
    const box = dialog.querySelector("[data-ids]");
    box.replaceChildren(...ids.map((id) => Object.assign(document.createElement("input"), { type: "hidden", name: field, value: id })));
    dialog.querySelector("[data-count]").textContent = ids.length ? `For: ${ids.join(", ")}` : "Select at least one row first.";
    dialog.querySelector(".dialog-results").replaceChildren();
    dialog.showModal();
    return;
  }
  if (event.target.closest("[data-verify-open]")) {
    event.target.closest("form").querySelector("dialog").showModal();
    return;
  }
  const closer = event.target.closest("[data-close]");
  if (closer) closer.closest("dialog").close();
});

// After a decision is answered, the verification dialog closes; the form keeps what was typed.
document.addEventListener("htmx:afterRequest", (event) => {
  const verify = event.target.closest("form")?.querySelector("dialog[open]");
  if (verify) verify.close();
});
