// Redaction of private data before a record is shown for upload: e-mail addresses, access tokens, card numbers
// (Luhn-checked), phone numbers and URLs' query secrets. The server (contributions/redaction.py) runs the same
// patterns again and refuses a record that still holds any; both are tested on tests/redaction_vectors.json.
(function (root) {
  "use strict";

  const QUERY_PARAMS_TO_REDACT =
    "access_token|refresh_token|id_token|token|auth|authorization|api_key|apikey|key|secret|client_secret" +
    "|password|passwd|pwd|pass|session|sessionid|sid|code|signature|sig";
  const URL_SECRET = new RegExp("([?&#](?:" + QUERY_PARAMS_TO_REDACT + ")=)(?!\\[secret\\])[^&#\\s]+", "gi");
  // Bounded parts (local part, labels, their number) keep every pattern linear in the text's length.
  const EMAIL = /[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9-]{1,63}(?:\.[A-Za-z0-9-]{1,63}){0,8}\.[A-Za-z]{2,24}(?![A-Za-z])/g;
  const TOKEN = new RegExp(
    "\\bBearer\\s+[A-Za-z0-9._~+/-]{8,}=*" +
      "|\\beyJ[A-Za-z0-9_-]{5,}\\.[A-Za-z0-9_-]{5,}\\.[A-Za-z0-9_-]{5,}" +
      "|\\b(?:gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,}|sk-[A-Za-z0-9_-]{20,}" +
      "|xox[abprs]-[A-Za-z0-9-]{10,}|AKIA[0-9A-Z]{16}|AIza[0-9A-Za-z_-]{30,}|jct_[A-Za-z0-9_-]{16,})",
    "g",
  );
  // Any other run of 32+ token characters is a token when it mixes letters and digits (checked on the match).
  const LONG_RUN = /\b[A-Za-z0-9_-]{32,}\b/g;
  const CARD = /(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d-])/g;
  const PHONE = /(?<![\w+])\+?\(?\d(?:[ .()-]{0,2}\d){8,14}(?!\w)/g;

  const MARKERS = { email: "[email]", card: "[card]", phone: "[phone]", token: "[token]", url_secret: "[secret]" };

  function luhnValid(digits) {
    let total = 0;
    for (let i = 0; i < digits.length; i++) {
      let value = Number(digits[digits.length - 1 - i]);
      if (i % 2 === 1) {
        value *= 2;
        if (value > 9) value -= 9;
      }
      total += value;
    }
    return total % 10 === 0;
  }

  function card(match) {
    return luhnValid(match.replace(/\D/g, "")) ? MARKERS.card : match;
  }

  /** Return text with every pattern replaced by its marker, and the kinds that were found. */
  function redact(text) {
    const found = new Set();
    let out = String(text);
    out = out.replace(URL_SECRET, (_, name) => {
      found.add("url_secret");
      return name + MARKERS.url_secret;
    });
    out = out.replace(EMAIL, () => {
      found.add("email");
      return MARKERS.email;
    });
    out = out.replace(TOKEN, () => {
      found.add("token");
      return MARKERS.token;
    });
    out = out.replace(LONG_RUN, (match) => {
      if (!(/[0-9]/.test(match) && /[A-Za-z]/.test(match))) return match;
      found.add("token");
      return MARKERS.token;
    });
    out = out.replace(CARD, (match) => {
      const replaced = card(match);
      if (replaced !== match) found.add("card");
      return replaced;
    });
    out = out.replace(PHONE, () => {
      found.add("phone");
      return MARKERS.phone;
    });
    return { text: out, found: [...found] };
  }

  const api = { redact, luhnValid, MARKERS };
  if (typeof module !== "undefined" && module.exports) module.exports = api;
  else root.JanctionRedact = api;
})(globalThis);
