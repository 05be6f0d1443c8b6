// The API client: authenticated requests, and every HTTP failure in plain words.

import { $ } from "./dom.js";
import { MAX_MB } from "./state.js";

export const KEY_STORAGE = "sam_droplet_api_key";

export function authHeaders() {
  const key = sessionStorage.getItem(KEY_STORAGE);
  return key ? { "X-API-Key": key } : {};
}

// Plain words for an HTTP failure, next to the file it concerns.
export function explain(status, body, retryAfter) {
  const server = body && body.error ? body.error.message : "";
  const wait = retryAfter ? ` Try again in ${retryAfter} s.` : "";
  switch (status) {
    case 0: return "Could not reach the server: check the network connection and that the service is running.";
    case 400: return `The server could not use this file: ${server || "bad request"}.`;
    case 401: return "The server needs a valid API key.";
    case 404: return server || "Not found on the server.";
    case 413: return `The file is too large for the server: ${server || `the limit is ${MAX_MB} MB`}.`;
    case 415: return "This file type is not supported: use PNG, JPEG, TIFF, BMP or WebP.";
    case 429: return `Too many requests for now: the server's rate limit was reached.${wait}`;
    case 503: return `The server is busy or not ready${server ? ` (${server})` : ""}.${wait}`;
    case 504: return "The analysis took longer than the server allows and was stopped. Try a smaller image or the classical segmenter.";
    default: return `The server failed (HTTP ${status})${server ? `: ${server}` : ""}.`;
  }
}

export async function api(path, options = {}) {
  let response;
  try {
    response = await fetch(path, { ...options, headers: { ...(options.headers || {}), ...authHeaders() } });
  } catch {
    return { ok: false, status: 0, body: null, message: explain(0) };
  }
  const body = await response.json().catch(() => null);
  if (response.status === 401) askForKey("The server did not accept the key.");
  const message = response.ok ? "" : explain(response.status, body, response.headers.get("Retry-After"));
  return { ok: response.ok, status: response.status, body, message };
}

export function askForKey(error = "") {
  $("key-error").textContent = error;
  $("key-button").hidden = false;
  if (!$("key-dialog").open) $("key-dialog").showModal();
}

// -- start-up --------------------------------------------------------------------------------------
