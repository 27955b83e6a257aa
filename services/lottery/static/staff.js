// Staff console: sign in with the staff token (kept in sessionStorage, so it is gone when
// the tab closes), list each poll's draw, draw with a typed confirmation, download the
// winners CSV. No framework, no build step, nothing loaded from elsewhere. Every string
// comes from the page, in its language (services/lottery/console_text.py).
"use strict";

(function () {
  const TOKEN_KEY = "lottery-staff-token";
  const LONGEST_TIMER_MS = 2 ** 31 - 1; // a longer setTimeout fires at once
  const $ = (id) => document.getElementById(id);
  const S = JSON.parse($("console-strings").textContent);
  const LOCALE = document.documentElement.lang === "zh-CN" ? "zh-CN" : "en-GB";
  const COUNT_EVERY_MS = 5000;
  const numbers = new Intl.NumberFormat(LOCALE);
  let nextChange = null;
  let countTimer = null;
  let shown = []; // [{poll, card, final}] of the cards on the page

  function t(key, values) {
    return S[key].replace(/\{(\w+)\}/g, (whole, name) =>
      values && name in values ? String(values[name]) : whole,
    );
  }

  // A counted noun: the string's "_one" or "_other" form, as the console's language counts n.
  const plurals = new Intl.PluralRules(LOCALE);
  function tn(key, n, values) {
    return t(key + (plurals.select(n) === "one" ? "_one" : "_other"), values);
  }

  function token() {
    return sessionStorage.getItem(TOKEN_KEY);
  }

  async function call(method, path, body) {
    const headers = { Authorization: "Bearer " + token() };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: "no-store",
    });
    return response;
  }

  // A refusal in the console's words where it has them, the service's otherwise; the code
  // is kept either way, for a call to the on-call engineer.
  async function problem(response) {
    try {
      const data = await response.json();
      const known = data.code && S["error_" + data.code];
      let text = known || data.detail || data.title || response.statusText;
      // A draw held back names what is still on its way, per consumer group and topic.
      if (data.left && typeof data.left === "object") {
        const parts = Object.entries(data.left).filter(([, n]) => n > 0);
        if (parts.length) text += " " + t("left", { left: parts.map(([k, n]) => k + " " + n).join(", ") });
      }
      return text + (data.code ? " (" + data.code + ")" : "");
    } catch {
      return response.status + " " + response.statusText;
    }
  }

  function showSignIn(message) {
    sessionStorage.removeItem(TOKEN_KEY);
    clearTimeout(nextChange);
    clearInterval(countTimer);
    shown = [];
    $("sign-in").hidden = false;
    $("who").hidden = true;
    $("sign-out").hidden = true;
    $("refresh").hidden = true;
    $("polls").replaceChildren();
    const error = $("sign-in-error");
    error.hidden = !message;
    error.textContent = message || "";
    $("status").textContent = "";
  }

  // On the poll's own clock, named beside it: staff call the close "09:00 Beijing time"
  // whatever zone the browser is in.
  function pollTime(iso, zone) {
    if (!iso) return "";
    return new Intl.DateTimeFormat(LOCALE, {
      timeZone: zone,
      year: "numeric",
      month: "short",
      day: "numeric",
      hour: "2-digit",
      minute: "2-digit",
      hourCycle: "h23",
    }).format(new Date(iso));
  }

  function field(card, name) {
    return card.querySelector('[data-field="' + name + '"]');
  }

  function fillHistogram(target, histogram) {
    const entries = Object.entries(histogram || {});
    const top = Math.max(0, ...entries.map(([, n]) => n));
    target.classList.toggle("empty", top === 0);
    if (top === 0) {
      const none = document.createElement("p");
      none.className = "hint";
      none.textContent = S.histogram_empty;
      return target.replaceChildren(none);
    }
    target.replaceChildren(
      ...entries.map(([days, n]) => {
        const column = document.createElement("div");
        column.className = "bar-col";
        column.title = t("histogram_title", { n, days });
        const count = document.createElement("span");
        count.textContent = n;
        const fill = document.createElement("div");
        fill.className = "fill";
        fill.style.height = Math.round((n / top) * 80) + "%";
        const label = document.createElement("span");
        label.textContent = t("histogram_label", { days });
        column.append(count, fill, label);
        return column;
      }),
    );
  }

  // A table row of text cells.
  function tableRow(values) {
    const tr = document.createElement("tr");
    for (const value of values) {
      const td = document.createElement("td");
      td.textContent = value;
      tr.append(td);
    }
    return tr;
  }

  function fillRanked(tbody, rows, none) {
    if (!rows.length) {
      const td = document.createElement("td");
      td.colSpan = 4;
      td.textContent = none;
      const tr = document.createElement("tr");
      tr.append(td);
      tbody.replaceChildren(tr);
      return;
    }
    tbody.replaceChildren(
      ...rows.map((row) => tableRow([row.rank, row.entry_id, row.name_masked, row.phone_masked])),
    );
  }

  // The voting page's address and its QR code, for the article or poster that brings
  // voters to it; the code carries this console's origin, the site's public one.
  function fillPageLinks(card, poll) {
    const page = "/polls/" + encodeURIComponent(poll.poll_id);
    const link = field(card, "page_link");
    link.href = page;
    link.textContent = location.origin + page;
    const image = field(card, "qr");
    image.src = page + "/qr.png";
    image.alt = t("qr_alt", poll);
    const download = field(card, "qr_download");
    download.href = image.src;
    download.download = poll.poll_id + "-qr.png";
  }

  // Once erased, entrants' details are gone: no export, and the card says when and by whom.
  function fillErasure(card, poll) {
    const erased = Boolean(poll.details_erased_at);
    card.querySelector('[data-action="csv"]').hidden = erased;
    card.querySelector('[data-part="erase"]').hidden = erased;
    const line = field(card, "erased_line");
    line.hidden = !erased;
    line.textContent = erased
      ? t("erased_line", { time: pollTime(poll.details_erased_at, poll.timezone), who: poll.details_erased_by })
      : "";
  }

  // A poll text as the console's language has it: the catalog's translation on the
  // English console, else the catalog's own (Chinese) text, marked so for screen readers.
  function pollText(poll, name, element) {
    const own = LOCALE === "en-GB" && poll.translations && poll.translations.en;
    const translated = own && own[name];
    if (element) {
      if (LOCALE === "en-GB" && !translated) element.lang = "zh-CN";
      else element.removeAttribute("lang");
    }
    return translated || poll[name];
  }

  function renderPoll(poll) {
    const card = $("poll-card").content.firstElementChild.cloneNode(true);
    const title = field(card, "title");
    title.textContent = pollText(poll, "title", title);
    field(card, "poll_id").textContent = poll.poll_id;
    // A prize draw's "open" also spans the time before voting opens: say which it is.
    const state = poll.lottery && poll.voting_state === "upcoming" ? "upcoming" : poll.state;
    field(card, "state").textContent = S["state_" + state] || state;
    field(card, "opens_at").textContent = pollTime(poll.opens_at, poll.timezone);
    field(card, "closes_at").textContent = pollTime(poll.closes_at, poll.timezone);
    field(card, "timezone").textContent = poll.timezone;
    fillPageLinks(card, poll);
    // A lottery poll is "open" until the close (its draw states come after); one without
    // a prize draw has the voting states: upcoming, open, closed.
    const closed = poll.lottery ? poll.state !== "open" : poll.state === "closed";
    card.querySelector('[data-part="count-private"]').hidden = !(poll.results === "after_close" && !closed);
    for (const part of card.querySelectorAll('[data-part="lottery"]')) part.hidden = !poll.lottery;
    for (const part of card.querySelectorAll('[data-part="no-lottery"]')) part.hidden = poll.lottery;
    fillLottery(card, poll);
    return card;
  }

  // The prize draw's part of a card: entries, the draw, its results and the erasure.
  function fillLottery(card, poll) {
    const has = (state) => poll.lottery && poll.state === state;
    for (const part of card.querySelectorAll('[data-part="drawn"]')) part.hidden = !has("drawn");
    card.querySelector('[data-part="draw"]').hidden = !has("awaiting_draw");
    card.querySelector('[data-part="results"]').hidden = !has("drawn");
    if (!poll.lottery) return;
    const prize = pollText(poll, "prize");
    field(card, "prize_line").textContent = t("prize_line", { ...poll, prize });
    field(card, "entries_line").textContent = t("entries_line", poll);
    field(card, "drawn_at").textContent = poll.drawn_at
      ? t("drawn_line", { time: pollTime(poll.drawn_at, poll.timezone), who: poll.drawn_by })
      : "";
    field(card, "commitment").textContent = poll.commitment || S.no_commitment;
    fillHistogram(field(card, "histogram"), poll.days_histogram);
    card.querySelector('[data-part="before-close"]').hidden = poll.state !== "open";
    if (poll.state === "drawn") {
      fillRanked(field(card, "winners"), poll.winners, S.no_winners);
      fillRanked(field(card, "reserve_list"), poll.reserve_list, S.no_reserves);
      field(card, "audit").href = "/api/v1/polls/" + encodeURIComponent(poll.poll_id) + "/lottery/audit";
      fillErasure(card, poll);
    }
    confirmedAction(card, poll, "draw", () => draw(poll, card));
    confirmedAction(card, poll, "erase", () => erase(poll));
    card.querySelector('[data-action="csv"]').addEventListener("click", () => downloadCsv(poll, card));
  }

  function showError(card, message) {
    const error = field(card, "error");
    error.hidden = !message;
    error.textContent = message || "";
  }

  // A staff action that cannot be undone (the draw, the erasure): its button works only
  // once the poll id has been typed, and a success reloads every card.
  function confirmedAction(card, poll, action, run) {
    const confirm = card.querySelector('[data-input="' + action + '-confirm"]');
    const button = card.querySelector('[data-action="' + action + '"]');
    confirm.addEventListener("input", () => {
      button.disabled = confirm.value.trim() !== poll.poll_id;
    });
    button.addEventListener("click", async () => {
      button.disabled = true;
      showError(card, "");
      try {
        const response = await run();
        if (response.status === 401 || response.status === 403) return showSignIn(await problem(response));
        if (!response.ok) {
          const message = await problem(response);
          button.disabled = false;
          return showError(card, message);
        }
        await load();
      } catch (error) {
        button.disabled = false;
        showError(card, t(action + "_failed", { error }));
      }
    });
  }

  function draw(poll, card) {
    const entropy = card.querySelector('[data-input="entropy"]').value;
    const body = entropy ? { external_entropy: entropy } : undefined;
    return call("POST", "/api/v1/polls/" + encodeURIComponent(poll.poll_id) + "/lottery/draw", body);
  }

  function erase(poll) {
    const path = "/staff/api/polls/" + encodeURIComponent(poll.poll_id) + "/erase";
    return call("POST", path, { confirm: poll.poll_id });
  }

  async function downloadCsv(poll, card) {
    showError(card, "");
    let response;
    let blob;
    try {
      response = await call("GET", "/api/v1/polls/" + encodeURIComponent(poll.poll_id) + "/lottery/winners.csv");
      if (response.ok) blob = await response.blob();
    } catch (error) {
      return showError(card, t("download_failed", { error }));
    }
    if (response.status === 401 || response.status === 403) return showSignIn(await problem(response));
    if (!response.ok) return showError(card, await problem(response));
    const url = URL.createObjectURL(blob);
    const link = document.createElement("a");
    link.href = url;
    link.download = poll.poll_id + "-winners.csv";
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
  }

  // The cards are redrawn on every load (a click on Refresh, another poll's opening or
  // close): what staff were typing into a form carries over, focus included.
  function typedInputs() {
    const typed = [];
    for (const item of shown) {
      for (const input of item.card.querySelectorAll("[data-input]")) {
        if (input.value) {
          typed.push({
            poll: item.poll.poll_id,
            name: input.dataset.input,
            value: input.value,
            focused: input === document.activeElement,
          });
        }
      }
    }
    return typed;
  }

  function restoreInputs(typed) {
    for (const { poll, name, value, focused } of typed) {
      const item = shown.find((candidate) => candidate.poll.poll_id === poll);
      const input = item && item.card.querySelector('[data-input="' + name + '"]');
      if (!input) continue;
      input.value = value;
      input.dispatchEvent(new Event("input")); // the confirm field enables its button
      if (focused) input.focus();
    }
  }

  async function load() {
    $("status").textContent = S.loading;
    let response;
    try {
      response = await call("GET", "/staff/api/polls");
    } catch (error) {
      $("status").textContent = t("unreachable", { error });
      return;
    }
    if (response.status === 401 || response.status === 403) return showSignIn(await problem(response));
    if (!response.ok) {
      $("status").textContent = await problem(response);
      return;
    }
    const data = await response.json();
    $("sign-in").hidden = true;
    $("who").hidden = false;
    $("who").textContent = t("signed_in_as", { who: data.staff });
    $("sign-out").hidden = false;
    $("refresh").hidden = false;
    $("status").textContent = data.polls.length ? "" : S.no_polls;
    const typed = typedInputs();
    shown = data.polls.map((poll) => ({ poll, card: renderPoll(poll), final: false }));
    $("polls").replaceChildren(...shown.map((item) => item.card));
    restoreInputs(typed);
    reloadAtNextChange(data.polls);
    clearInterval(countTimer);
    refreshCounts();
    countTimer = setInterval(refreshCounts, COUNT_EVERY_MS);
  }

  // ---- The count, live for staff (also where the public sees it only after the close) ----

  function fillCount(item, result) {
    const counts = result.counts || {};
    const total = result.total || 0;
    field(item.card, "count").replaceChildren(
      ...item.poll.options.map((option) => {
        const n = counts[option] || 0;
        const share = total ? ((n * 100) / total).toFixed(1) + "%" : "–";
        return tableRow([S["option_" + option] || option, numbers.format(n), share]);
      }),
    );
    item.final = Boolean(result.final);
    const when = item.final
      ? S.count_final
      : t("count_live", { time: pollTime(result.as_of, item.poll.timezone) });
    field(item.card, "count_status").textContent =
      tn("count_total", total, { n: numbers.format(total) }) + " · " + when;
  }

  async function refreshCount(item) {
    const status = field(item.card, "count_status");
    try {
      const path = "/api/v1/polls/" + encodeURIComponent(item.poll.poll_id) + "/results";
      const response = await call("GET", path);
      if (response.ok) return fillCount(item, await response.json());
      status.textContent = t("count_unavailable", { error: await problem(response) });
    } catch (error) {
      status.textContent = t("count_unavailable", { error });
    }
  }

  function refreshCounts() {
    if (document.hidden) return; // a console in a background tab need not ask
    for (const item of shown) if (!item.final) refreshCount(item);
  }

  // A console left open across an opening (the commitment appears) or a close (the draw
  // becomes available) shows it without a click: it reloads just after the next one. A
  // moment this browser's clock has passed but the service has not yet seen is tried
  // again every few seconds.
  function reloadAtNextChange(polls) {
    clearTimeout(nextChange);
    const moments = [];
    for (const poll of polls) {
      if (poll.state === "upcoming") moments.push(Date.parse(poll.opens_at));
      if (poll.state !== "open") continue;
      if (poll.lottery && !poll.commitment) moments.push(Date.parse(poll.opens_at));
      moments.push(Date.parse(poll.closes_at));
    }
    if (!moments.length) return;
    const wait = Math.max(Math.min(...moments) + 2000 - Date.now(), 5000);
    nextChange = setTimeout(load, Math.min(wait, LONGEST_TIMER_MS));
  }

  $("sign-in-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const value = $("token").value.trim();
    if (!value) return;
    sessionStorage.setItem(TOKEN_KEY, value);
    $("token").value = "";
    load();
  });
  $("sign-out").addEventListener("click", () => showSignIn(""));
  $("refresh").addEventListener("click", () => load());

  if (token()) load();
  else showSignIn("");
})();
