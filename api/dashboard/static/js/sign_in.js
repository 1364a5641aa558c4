import { call, describe, rememberToken } from "./api.js";

const form = document.getElementById("sign-in-form");
const input = document.getElementById("token");
const error = document.getElementById("sign-in-error");

form.addEventListener("submit", async (submitted) => {
  submitted.preventDefault();
  error.hidden = true;
  const value = input.value.trim();
  try {
    await call("GET", "/whoami", { bearer: value, quiet401: true });
  } catch (refused) {
    error.textContent = refused.status === 401 ? "This token is not valid: it is unknown, revoked or expired." : describe(refused);
    error.hidden = false;
    input.select();
    return;
  }
  rememberToken(value);
  input.value = "";
  location.assign("/ui");
});
input.focus();
