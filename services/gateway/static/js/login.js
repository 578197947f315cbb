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
  } finally {
    submit.disabled = false;
  }
});
