// The login page: POST /api/login, then back to where the agent was going.

import { api } from "./api.js";

const form = document.getElementById("login-form");
const error = document.getElementById("login-error");
const submit = document.getElementById("login-submit");

function nextUrl() {
  const next = new URLSearchParams(location.search).get("next") || "/";
  // Only paths of this origin: never bounce elsewhere. Resolving it the browser's way
  // catches "//host" and "/\host" (a backslash counts as a slash) alike.
  let url;
  try { url = new URL(next, location.origin); } catch { return "/"; }
  return next.startsWith("/") && url.origin === location.origin ? url.pathname + url.search + url.hash : "/";
}

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  const email = form.email.value.trim();
  const password = form.password.value;
  if (!email || !password) {
    error.textContent = "Enter your e-mail and password.";
    error.hidden = false;
    return;
  }
  submit.disabled = true;
  error.hidden = true;
  try {
    await api.login(email, password);
    location.assign(nextUrl());
  } catch (err) {
    error.textContent = err.message;
    error.hidden = false;
    form.password.select();
    // 429 (too many attempts) and 503 (too many sign-ins at once) say how long to wait:
    // the message says it too; the button stays off until then.
    if (err.retryAfterS > 0) {
      waitBeforeRetry(err.retryAfterS);
      return;
    }
  }
  submit.disabled = false;
});

function waitBeforeRetry(seconds) {
  submit.disabled = true;
  setTimeout(() => {
    submit.disabled = false;
    error.hidden = true; // "try again in N seconds" is over
  }, seconds * 1000);
}
