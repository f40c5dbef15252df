// Every htmx request carries the CSRF token of the double-submit cookie (starlette-csrf).
document.addEventListener("htmx:configRequest", (event) => {
  const match = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/);
  if (match) event.detail.headers["x-csrftoken"] = decodeURIComponent(match[1]);
});
